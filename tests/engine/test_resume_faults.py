"""Kill a small adaptive run again and again, at named points (``SAKD_FAULT``), and rerun it.

Each attempt runs in a forked child (no interpreter start-up) that kills itself with SIGKILL at
the point named (``sakd.engine.faults``): mid-epoch, inside the atomic writes of ``best.pt``,
``last.pt`` and ``summary.json``, between the ``best.pt`` and ``last.pt`` writes, during an
evaluation. After the last rerun the folder must hold exactly what an uninterrupted run holds:
bitwise-equal ``last.pt`` and ``best.pt`` tensors, the same metrics records and summary, a
``best.pt.sha256`` that certifies ``best.pt``, and no temporary files.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path

import pytest
import torch

from sakd.config import load_config
from sakd.engine import faults
from sakd.engine.checkpoint import load_checkpoint, sha256_file

pytestmark = pytest.mark.fault("interrupted")

OVERRIDES = [
    "distiller.name=at",
    "spots.mode=adaptive",
    "epochs=3",
    "batch_size=16",
    "data.train_limit=32",
    "data.test_limit=32",
    "device=cpu",  # bitwise equality is a CPU guarantee (GPU kernels may be nondeterministic)
    "precision=fp32",
    "channels_last=false",
    "progress=false",
]
# Issue 21's knobs at once: their schedule and EMA states must resume as exactly as the weights.
KNOBS = {
    "paper": [],
    "adamw-cosine-warmup-smoothing-clip-ema": [
        "optimizer.name=adamw",
        "lr=0.002",
        "optimizer.clip_grad_norm=1.0",
        "schedule.name=cosine",
        "schedule.warmup_epochs=1",
        "loss.label_smoothing=0.1",
        "ema.decay=0.9",
        "spots.agent_optimizer=main",
    ],
}


def _in_child(action, fault: str | None = None, stderr: Path | None = None) -> int:
    """Run ``action()`` in a forked child with ``SAKD_FAULT=fault``; its exit code (−9: killed)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            if stderr is not None:
                sys.stderr = open(stderr, "w")  # noqa: SIM115 - flushed before the child exits
            os.environ.pop(faults.ENV, None)
            if fault is not None:
                os.environ[faults.ENV] = fault
            faults.reset()
            torch.set_num_threads(1)
            code = action()
        except BaseException:  # noqa: BLE001 - reported through the exit code
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _distill(out: Path, knobs: tuple[str, ...] = ()):
    from sakd.engine.run import run

    def action() -> int:
        run(load_config("quickstart", [f"output_dir={out}", *OVERRIDES, *knobs]))
        return 0

    return action


def _tensors_equal(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            _tensors_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _tensors_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _same_checkpoint(a: Path, b: Path) -> None:
    x, y = load_checkpoint(a), load_checkpoint(b)
    for key in ("modules", "optimizers", "rng", "epoch", "phase_index", "best_epoch", "best_top1"):
        _tensors_equal(x[key], y[key], f"{a.name}:{key}")
    for key in ("schedulers", "ema"):
        assert (key in x) == (key in y), key
        if key in x:
            _tensors_equal(x[key], y[key], f"{a.name}:{key}")


def _records(path: Path) -> list[dict]:
    timing = ("seconds", "per_sec")
    return [
        {k: v for k, v in json.loads(line).items() if not any(t in k for t in timing)}
        for line in path.read_text().splitlines()
    ]


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".sakd.lock"  # the lock file names its latest holder
    }


@pytest.mark.parametrize("knobs", list(KNOBS))
def test_killed_again_and_again_ends_equal_to_an_uninterrupted_run(tmp_path, knobs):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    settings = tuple(KNOBS[knobs])
    assert _in_child(_distill(straight, settings)) == 0
    kills = [
        "write:best.pt@1",  # inside epoch 1's best.pt write: a temporary file is left
        "between_best_and_last@1",  # best.pt of epoch 1 written, last.pt not
        "write:last.pt@1",  # inside epoch 1's last.pt write
        "step@3",  # epoch 1 saved, killed in the middle of epoch 2
        "write:last.pt@1",  # inside epoch 2's last.pt write (best.pt may be ahead of it)
        "evaluate@2",  # epoch 2 saved, killed while evaluating epoch 3
        "write:summary.json@1",  # every epoch saved, killed writing the summary
    ]
    for fault in kills:
        assert _in_child(_distill(resumed, settings), fault) == -signal.SIGKILL, fault
    assert _in_child(_distill(resumed, settings)) == 0

    for name in ("last.pt", "best.pt"):
        _same_checkpoint(straight / "checkpoints" / name, resumed / "checkpoints" / name)
    assert _records(resumed / "metrics.jsonl") == _records(straight / "metrics.jsonl")
    summaries = [json.loads((d / "summary.json").read_text()) for d in (straight, resumed)]
    for summary in summaries:
        summary.pop("seconds")
    assert summaries[0] == summaries[1]
    best = resumed / "checkpoints" / "best.pt"
    assert (best.parent / "best.pt.sha256").read_text().split()[0] == sha256_file(best)
    leftovers = [p.name for p in resumed.rglob(".*") if p.name != ".sakd.lock"]
    assert leftovers == []

    # Started once more, the complete run is left exactly as it is.
    before = _snapshot(resumed)
    assert _in_child(_distill(resumed, settings)) == 0
    assert _snapshot(resumed) == before


def test_sigterm_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    from sakd.cli import main

    out, err = tmp_path / "run", tmp_path / "stderr.txt"
    argv = ["distill", "quickstart", f"output_dir={out}", *OVERRIDES]
    assert _in_child(lambda: main(argv), "step@3:TERM", err) == 128 + signal.SIGTERM
    message = err.read_text().strip()
    assert message.count("\n") == 0 and "terminated" in message and "Traceback" not in message
    saved = load_checkpoint(out / "checkpoints" / "last.pt")
    assert saved["epoch"] == 1  # the epoch finished before the signal, intact
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
