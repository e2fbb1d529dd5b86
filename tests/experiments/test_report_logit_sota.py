"""The published logit-distiller numbers (mdistiller, logit standardisation) in `sakd report`."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from sakd.config import list_recipes
from sakd.experiments.reference import logit_references
from sakd.experiments.report import build_report, expected_runs, render_csv, render_markdown

from .conftest import fabricate_run

PAIR = "cifar100/resnet32x4-resnet8x4"


def test_table_holds_the_issue_numbers_with_protocols():
    refs = logit_references()
    expected = {
        ("resnet32x4", "resnet8x4", "dkd"): 76.32,
        ("vgg13", "vgg8", "dkd"): 74.68,
        ("resnet32x4", "resnet8x4", "kd+ls"): 76.62,
        ("vgg13", "vgg8", "kd+ls"): 74.36,
        ("resnet32x4", "resnet8x4", "dkd+ls"): 77.01,
        ("vgg13", "vgg8", "dkd+ls"): 74.81,
    }
    for (teacher, student, method), top1 in expected.items():
        rows = refs[("cifar100", teacher, student, method)]
        assert [r.top1 for r in rows] == [top1]
        assert "epoch" in rows[0].protocol and rows[0].reference
    recipes = set(list_recipes())
    for dataset, teacher, student, method in refs:
        assert method in {"kd", "dkd", "kd+ls", "dkd+ls"}
        assert f"{dataset}/{teacher}-{student}" in recipes
        for ref in refs[(dataset, teacher, student, method)]:
            assert ("best epoch" in ref.protocol) != ("last epoch" in ref.protocol)
            assert "run" in ref.protocol  # how many runs (or that the count is not stated)


def test_report_shows_published_logit_numbers_beside_ours(tmp_path):
    for mode, curves in (
        ("fixed", [[70.0, 75.0, 74.0], [71.0, 77.0, 76.0]]),
        ("adaptive", [[72.0, 76.5, 76.0]]),
    ):
        for seed, curve in enumerate(curves):
            fabricate_run(
                tmp_path / f"dkd-{mode}/seed{seed}",
                PAIR,
                ["distiller.name=dkd", f"spots.mode={mode}", f"seed={seed}", "epochs=3"],
                curve,
            )
    report = build_report(tmp_path)
    text = render_markdown(report, [])
    assert "## Published logit distillers" in text
    row = next(
        line
        for line in text.splitlines()
        if line.startswith("| cifar100 | resnet32x4 -> resnet8x4 | dkd | 76.32")
    )
    # ours fixed best = mean(75, 77) = 76.00 → −0.32; adaptive best 76.50 → +0.18
    assert "76.00 ± 1.41" in row and "-0.32" in row and "+0.18" in row
    assert "mdistiller (best epoch of 240; mean of 5 runs)" in row
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    fixed = next(r for r in rows if r["distiller"] == "dkd" and r["mode"] == "fixed")
    adaptive = next(r for r in rows if r["distiller"] == "dkd" and r["mode"] == "adaptive")
    assert (
        fixed["published_logit_top1"] == "76.32" and "mdistiller" in fixed["published_logit_source"]
    )
    assert adaptive["published_logit_top1"] == ""


def test_report_without_logit_cells_has_no_such_section(tmp_path):
    fabricate_run(
        tmp_path / "at-fixed/seed0", PAIR, ["distiller.name=at", "epochs=2"], [50.0, 60.0]
    )
    assert "Published logit distillers" not in render_markdown(build_report(tmp_path), [])


def test_kd_and_kd_ls_runs_are_separate_cells_with_their_published_numbers(tmp_path):
    for recipe, name in ((PAIR, "kd"), ("cifar100/ls/resnet32x4-resnet8x4", "kd")):
        fabricate_run(
            tmp_path / recipe.replace("/", "_") / "seed0",
            recipe,
            [f"distiller.name={name}", "epochs=2"],
            [70.0, 71.0],
        )
    report = build_report(tmp_path)
    assert sorted(c.key.distiller for c in report.cells) == ["kd", "kd+ls"]
    assert not [p for p in report.problems if p.kind == "mixed"]
    text = render_markdown(report, [])
    assert "| cifar100 | resnet32x4 -> resnet8x4 | kd | 73.33 |" in text
    assert "| cifar100 | resnet32x4 -> resnet8x4 | kd+ls | 76.62 | LS (best epoch" in text


def test_logit_sota_grid_compares_at_beside_dkd_fixed_and_adaptive_with_the_published_methods():
    runs = expected_runs(str(Path(__file__).parents[2] / "grids" / "logit_sota.yaml"))
    cells = {(key.student, key.distiller, mode) for key, mode, _ in runs}
    alone = {"kd", "dkd", "kd+ls", "dkd+ls"}
    assert {d for _, d, m in cells if m == "fixed"} == alone | {"at+dkd", "at+dkd+ls"}
    assert {d for _, d, m in cells if m == "adaptive"} == {"at+dkd", "at+dkd+ls"}
    assert {s for s, _, _ in cells} == {"resnet8x4", "vgg8", "wrn_16_2", "resnet20"}
    assert len(runs) == 32 and all(seeds == [0, 1, 2] for _, _, seeds in runs)
    for key, _, _ in runs:  # every method alone has published numbers to compare with
        if key.distiller in alone:
            assert logit_references().get((key.dataset, key.teacher, key.student, key.distiller))


def test_embedded_logit_grid_runs_the_same_four_methods():
    runs = expected_runs(str(Path(__file__).parents[2] / "grids" / "embedded_logit.yaml"))
    assert {key.distiller for key, _, _ in runs} == {"kd", "dkd", "kd+ls", "dkd+ls"}
    assert {mode for _, mode, _ in runs} == {"fixed", "adaptive"}
