"""The ImageNet reference rows: same columns as cifar100_baselines.csv, the anchors of the recipe."""

from __future__ import annotations

import csv
import io
from importlib import resources

REFERENCE = resources.files("sakd.experiments").joinpath("reference")


def rows(name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(REFERENCE.joinpath(name).read_text())))


def test_imagenet_rows_have_the_baselines_format_and_the_published_anchors():
    imagenet = rows("imagenet_baselines.csv")
    assert list(imagenet[0]) == list(rows("cifar100_baselines.csv")[0])
    anchors = {
        (r["source"].split(" ")[0], r["method"]): float(r["top1"])
        for r in imagenet
        if r["student"] == "resnet18"
    }
    assert anchors[("CRD", "KD")] == 70.66
    assert anchors[("CRD", "CRD")] == 71.17
    assert anchors[("DKD", "DKD")] == 71.70
    assert all(r["dataset"] == "imagenet" and r["protocol"] for r in imagenet)
    assert all(0 < float(r["top1"]) < 100 for r in imagenet)
