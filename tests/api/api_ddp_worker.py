"""Started by ``tests/api/test_api_ddp.py`` through ``torchrun``: sakd.distill on every rank.

``python -m torch.distributed.run --nproc_per_node=2 api_ddp_worker.py TREE OUT`` builds the same
own teacher and student on each rank (same seed), distils adaptively through the Python API, and
saves this rank's returned student state to ``OUT/rank<r>.pt``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests.api

import sakd  # noqa: E402
from tests.api.conftest import OwnNet  # noqa: E402


def main(tree: str, out: str) -> None:
    torch.manual_seed(0)
    teacher, student = OwnNet(width=8), OwnNet(width=4)
    run = sakd.distill(
        teacher,
        student,
        tree,
        distiller="at",
        mode="adaptive",
        epochs=1,
        batch_size=4,
        device="cpu",
        progress=False,
        output_dir=str(Path(out) / "run"),
    )
    assert run.model is student
    rank = int(os.environ["RANK"])
    torch.save(
        {"state": student.state_dict(), "last_top1": run.last_top1},
        Path(out) / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
