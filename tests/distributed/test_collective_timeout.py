"""A hung rank: the other rank's collective fails after the bounded timeout, with a line naming it.

Two forked processes form a real gloo group through :func:`sakd.engine.distributed.join_launch`
with ``SAKD_COLLECTIVE_TIMEOUT_S=3``; rank 1 then hangs, rank 0 enters an all-reduce.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.fault("data-parallel")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank: int, port: int, report: str) -> None:  # pragma: no cover - runs in a child
    code = 1
    try:
        os.environ.update(
            RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            SAKD_COLLECTIVE_TIMEOUT_S="3",
        )
        from sakd.cli import _distributed_timeout
        from sakd.engine.distributed import all_reduce_sum, join_launch

        join_launch("cpu")
        if rank == 1:
            time.sleep(120)  # hung
        started = time.perf_counter()
        try:
            all_reduce_sum({"x": torch.ones(1)})
        except RuntimeError as exc:
            with open(report, "w") as handle:
                handle.write(f"{time.perf_counter() - started:.1f}\n{_distributed_timeout(exc)}")
            code = 3
    finally:
        sys.stderr.flush()
        os._exit(code)


def test_a_hung_rank_makes_the_other_fail_with_a_line_naming_it(tmp_path):
    port, report = _free_port(), str(tmp_path / "rank0.txt")
    pids = []
    for rank in (0, 1):
        pid = os.fork()
        if pid == 0:  # pragma: no cover
            _rank(rank, port, report)
        pids.append(pid)
    try:
        _, status = os.waitpid(pids[0], 0)
    finally:
        os.kill(pids[1], signal.SIGKILL)
        os.waitpid(pids[1], 0)
    assert os.waitstatus_to_exitcode(status) == 3
    seconds, line = Path(report).read_text().split("\n", 1)
    assert float(seconds) < 30
    assert line.startswith("rank 0 of 2 waited 3 s for the other ranks") and "\n" not in line
