"""Helpers for the experiment tests: tiny grids on the embedded data, fabricated run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from sakd.config import dump_config, load_config
from sakd.engine.records import EpochRecord
from sakd.experiments import runner as runner_module
from sakd.experiments.runner import reproduce

# A few steps per run: 64 training images in batches of 32, 32 test images, one epoch.
TINY = [
    "epochs=1",
    "batch_size=32",
    "data.train_limit=64",
    "data.test_limit=32",
    "progress=false",
    "precision=bf16",
    "channels_last=true",
]


def quiet(_: str) -> None:
    """Swallow the runner's progress lines."""


@pytest.fixture(scope="session")
def interrupted_grid(tmp_path_factory):
    """A 4-run grid killed after its first finished run, then started again twice.

    Returns the grid root and the output folders passed to the engine by each invocation.
    """
    root = tmp_path_factory.mktemp("grid")
    grid = write_grid(
        root / "grid.yaml",
        distillers=["at"],
        modes=["fixed", "adaptive"],
        seeds=[0, 1],
    )
    calls: list[list[Path]] = [[], [], []]
    real_run = runner_module.run
    attempt = {"index": 0}

    def counting_run(cfg):
        calls[attempt["index"]].append(Path(cfg.output_dir))
        summary = real_run(cfg)
        if attempt["index"] == 0:
            raise KeyboardInterrupt
        return summary

    patch = pytest.MonkeyPatch()
    patch.setattr(runner_module, "run", counting_run)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures run outside the root conftest's one-thread fixture
    try:
        with pytest.raises(KeyboardInterrupt):
            reproduce(str(grid), out=root, log=quiet)
        for index in (1, 2):
            attempt["index"] = index
            reproduce(str(grid), out=root, log=quiet)
    finally:
        patch.undo()
        torch.set_num_threads(threads)
    return root, calls


def write_grid(path: Path, **fields) -> Path:
    """A grid file with the quickstart pair and the tiny settings unless ``fields`` say otherwise."""
    grid = {
        "name": path.stem,
        "pairs": ["quickstart"],
        "distillers": ["kd"],
        "modes": ["fixed"],
        "seeds": [0],
        "overrides": [
            *TINY,
            "output_dir=runs/{teacher}-{student}/{distiller}-{mode}/seed{seed}",
        ],
    }
    grid.update(fields)
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def spot_names(count: int) -> list[str]:
    """Names of ``count`` spots as a zoo network's would be: stage1 … then logits."""
    return [*(f"stage{i + 1}" for i in range(count - 1)), "logits"]


def fabricate_run(
    folder: Path,
    recipe: str,
    overrides: list[str],
    top1: list[float],
    *,
    finished: bool = True,
    spot_rates: list[list[float]] | None = None,
    teacher_top1: float = 79.0,
    teacher_sha256: str = "ab" * 32,
) -> Path:
    """A run folder written by hand: config.yaml, metrics.jsonl (one record per value), run.json."""
    cfg = load_config(recipe, [*overrides, f"output_dir={folder}"])
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(dump_config(cfg))
    lines = []
    names = spot_names(len(spot_rates[0])) if spot_rates else []
    for epoch, acc in enumerate(top1):
        record = EpochRecord(
            epoch=epoch + 1,
            phase="distill",
            lr=0.1,
            losses={"ce": 1.0},
            test_top1=acc,
            test_top5=99.0,
            spot_rates=dict(zip(names, spot_rates[epoch], strict=True)) if spot_rates else {},
        )
        lines.append(record.to_json())
    (folder / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    info = {"precision": "fp32", "device": "cuda", "device_name": "Test GPU", "torch": "2.x"}
    if names:
        info["spots"] = [{"name": n, "student": f"{n} (8×4×4)", "teacher": n} for n in names]
    if cfg.teacher is not None:
        info.update(teacher_sha256=teacher_sha256, teacher_top1=teacher_top1)
    (folder / "run.json").write_text(json.dumps(info))
    if finished:
        (folder / "summary.json").write_text(json.dumps({"best_top1": max(top1)}))
    return folder
