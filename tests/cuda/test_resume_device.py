"""``sakd distill`` on generated CIFAR-format files, killed mid-run and resumed, on the device.

Each run is a fresh ``python -c`` process (CUDA does not survive a fork) that turns on
``torch.use_deterministic_algorithms(True, warn_only=True)`` (and cuBLAS's fixed workspace) before
calling the CLI; ``SAKD_FAULT=step@9`` kills the first attempt with SIGKILL in the middle of its
second epoch. The resumed run must end bitwise equal to the uninterrupted one. Ops that have no
deterministic implementation on the device warn (``warn_only``): their names are printed, and
written to ``$SAKD_NONDETERMINISTIC_OPS`` when that is set, so a failure on a GPU says which op
broke the equality.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.test_resume_faults import _records, _same_checkpoint

pytestmark = pytest.mark.fault("interrupted")

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = (
    "import sys, torch; torch.use_deterministic_algorithms(True, warn_only=True); "
    "from sakd.cli import main; sys.exit(main(sys.argv[1:]))"
)
WARNING = re.compile(r"UserWarning: (\S+) does not have a deterministic implementation")


def _distill(out: Path, data: Path, device: str, precision: str, fault: str | None):
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8", "OMP_NUM_THREADS": "1"}
    env.pop("SAKD_FAULT", None)
    if fault is not None:
        env["SAKD_FAULT"] = fault
    argv = [
        "distill",
        "quickstart",  # the packaged 10-class resnet32 teacher, on CIFAR-10-format files
        "data.name=cifar10",
        f"data.root={data}",
        "data.train_limit=96",
        "data.test_limit=32",
        "distiller.name=at",
        "spots.mode=adaptive",
        "epochs=2",
        "batch_size=16",
        f"device={device}",
        f"precision={precision}",
        f"channels_last={precision == 'bf16'}".lower(),
        "progress=false",
        f"output_dir={out}",
    ]
    return subprocess.run(
        [sys.executable, "-c", LAUNCH, *argv], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    ("device", "precision"),
    [
        ("cpu", "fp32"),
        pytest.param("cuda", "fp32", marks=pytest.mark.cuda),
        pytest.param("cuda", "bf16", marks=pytest.mark.cuda),
    ],
)
def test_killed_and_resumed_equals_an_uninterrupted_run(tmp_path, device, precision):
    data = tmp_path / "data"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cifar_files.py"), str(data)]
        + ["--dataset", "cifar10", "--train", "100", "--test", "40"],
        check=True,
        capture_output=True,
    )
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    runs = [_distill(straight, data, device, precision, None)]
    runs.append(_distill(resumed, data, device, precision, "step@9"))  # 6 steps per epoch
    assert runs[-1].returncode == -signal.SIGKILL, runs[-1].stderr[-2000:]
    runs.append(_distill(resumed, data, device, precision, None))
    for done in (runs[0], runs[2]):
        assert done.returncode == 0, done.stderr[-2000:]

    ops = sorted({op for r in runs for op in WARNING.findall(r.stderr)})
    print(f"{device} {precision}: ops without a deterministic implementation: {ops or 'none'}")
    if report := os.environ.get("SAKD_NONDETERMINISTIC_OPS"):
        with open(report, "a") as handle:
            handle.write(f"{device} {precision}: {', '.join(ops) or 'none'}\n")
    where = f" (ops without a deterministic implementation: {ops})" if ops else ""
    assert _records(resumed / "metrics.jsonl") == _records(straight / "metrics.jsonl"), where
    for name in ("last.pt", "best.pt"):
        try:
            _same_checkpoint(straight / "checkpoints" / name, resumed / "checkpoints" / name)
        except AssertionError as error:
            raise AssertionError(f"{error}{where}") from None
