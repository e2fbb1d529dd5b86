"""docs/models.md's zoo table is measured: this file renders it and checks the committed copy.

Regenerate the table with ``.venv/bin/python tests/models/test_models_doc.py`` and paste it between
the ``zoo-table`` markers of docs/models.md.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from sakd.models import SpotInfo, create_model, list_models

DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"
START, END = "<!-- zoo-table:start -->", "<!-- zoo-table:end -->"

REPD = "RepDistiller `models/{}`"
SOURCES = {
    "resnet": REPD.format("resnet.py"),
    "resnet_cifar_stem": REPD.format("resnetv2.py"),
    "wrn": REPD.format("wrn.py"),
    "vgg": REPD.format("vgg.py") + " (`_bn`); pool3 rule from the SAKD code",
    "mobilenetv2_half": REPD.format("mobilenetv2.py") + " `mobile_half`",
    "mobilenetv2": "SAKD authors' `models/mobilenetv2.py` `mobilev2`",
    "shufflev1": REPD.format("ShuffleNetv1.py"),
    "shufflev2": REPD.format("ShuffleNetv2.py") + " (net size 1)",
}
PUBLISHED = {"resnet8x4": "1.23", "resnet32x4": "7.43"}


def source(name: str) -> str:
    """Where the architecture comes from."""
    if name in ("resnet18", "resnet34", "resnet50"):
        return SOURCES["resnet_cifar_stem"]
    if name.endswith("_imagenet"):
        return "torchvision `models/resnet.py` (ImageNet stem)"
    for key in ("mobilenetv2_half", "mobilenetv2", "shufflev1", "shufflev2", "wrn", "vgg"):
        if name.startswith(key):
            return SOURCES[key]
    return SOURCES["resnet"]


def natural_key(name: str) -> list[str | int]:
    """Sort key that orders resnet8 < resnet14 < resnet110."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def describe(info: SpotInfo) -> str:
    """'C×H²' for a map, 'C' for a vector."""
    if info.is_map:
        return f"{info.channels}×{info.shape[1]}²"
    return str(info.channels)


def render_table() -> str:
    """The zoo table: parameters (100 classes), F at 32×32, pre-ReLU spots, source."""
    lines = [
        "| model | params (M) | params (exact) | published (M) | F at 32×32 | pre-ReLU F | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in sorted(list_models(), key=natural_key):
        model = create_model(name, num_classes=100)
        count = sum(p.numel() for p in model.parameters())
        feats = ", ".join(describe(info) for info in model.spot_info(32))
        preact = [
            f"F{i}"
            for i, stage in enumerate(model.stages)
            if isinstance(stage, nn.Sequential) and isinstance(stage[-1], nn.ReLU)
        ]
        lines.append(
            f"| `{name}` | {count / 1e6:.2f} | {count:,} | {PUBLISHED.get(name, '–')} | {feats} "
            f"| {', '.join(preact) or '–'} | {source(name)} |"
        )
    return "\n".join(lines)


def test_docs_table_is_up_to_date() -> None:
    text = DOC.read_text(encoding="utf-8")
    committed = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert committed == render_table(), (
        "docs/models.md is stale: run .venv/bin/python tests/models/test_models_doc.py"
    )


if __name__ == "__main__":
    print(render_table())
