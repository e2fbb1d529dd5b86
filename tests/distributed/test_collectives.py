"""The leaf collectives (sakd.collectives) in one process and on two gloo ranks."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sakd.collectives import (
    all_reduce_,
    all_reduce_flat,
    all_reduce_sum,
    broadcast_from_main,
    gather_global_rows,
    global_rows,
    rank_and_world_size,
)

WORKER = Path(__file__).with_name("collectives_worker.py")
pytestmark = pytest.mark.xdist_group("ddp")


def _load_worker():
    spec = importlib.util.spec_from_file_location("sakd_tests_collectives_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


draw = _load_worker().draw


def test_single_process_is_the_identity():
    assert rank_and_world_size() == (0, 1)
    values = {"a": torch.ones(2), "b": torch.arange(3.0)}
    assert all_reduce_sum(values) is values
    tensor = torch.arange(4.0)
    assert all_reduce_(tensor) is tensor and tensor.tolist() == [0, 1, 2, 3]
    flat = all_reduce_flat([torch.ones(2, 2), torch.zeros(3)])
    assert [t.shape for t in flat] == [(2, 2), (3,)] and flat[0].dtype == torch.float64
    assert torch.equal(global_rows(draw, (4, 2)), draw((4, 2)))
    rows = torch.arange(6.0).reshape(3, 2)
    assert gather_global_rows(rows) is rows
    assert broadcast_from_main({"x": 1}) == {"x": 1}


def test_two_gloo_ranks(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = subprocess.run(
        [*command, str(WORKER), str(tmp_path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    full = draw((6, 2))
    for rank, out in enumerate(results):
        assert out["rank_world"].tolist() == [rank, 2]
        assert torch.equal(out["flat0"], torch.full((2, 2), 3.0, dtype=torch.float64))
        assert out["flat1"].tolist() == [1.0]
        assert out["sum"].tolist() == [3.0, 20.0]
        # rank r keeps rows r, r + W, ... of the global draw; the gather restores the global order
        assert torch.equal(out["mine"], full[rank::2])
        assert torch.equal(out["gathered"], full)
        assert out["broadcast"].tolist() == [0.0, 0.0]
        assert out["bn_mean"].tolist() == [0.5, 0.5]
        assert out["bn_var"].tolist() == [3.0, 3.0]
