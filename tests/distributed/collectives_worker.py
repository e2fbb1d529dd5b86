"""Run by ``torchrun --nproc_per_node=2 collectives_worker.py OUT``: every collective of
sakd.collectives (and the engine's BatchNorm averaging) once on gloo, results to OUT/rank<r>.pt."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from sakd.collectives import (
    all_reduce_flat,
    all_reduce_sum,
    broadcast_from_main,
    gather_global_rows,
    global_rows,
    rank_and_world_size,
)
from sakd.engine.distributed import average_batchnorm_statistics


def draw(shape: tuple[int, ...]) -> torch.Tensor:
    """The same normal draw on every rank (a fixed seed)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(3))


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    try:
        rank = dist.get_rank()
        flat = all_reduce_flat([torch.full((2, 2), rank + 1.0), torch.tensor([float(rank)])])
        mine = global_rows(draw, (3, 2))
        norm = nn.BatchNorm1d(2)
        norm.running_mean.fill_(float(rank))
        norm.running_var.fill_(2.0 * (rank + 1))
        average_batchnorm_statistics(norm)
        result = {
            "rank_world": torch.tensor(rank_and_world_size()),
            "flat0": flat[0],
            "flat1": flat[1],
            "sum": all_reduce_sum({"x": torch.tensor([rank + 1.0, 10.0])})["x"],
            "mine": mine,
            "gathered": gather_global_rows(mine),
            "broadcast": broadcast_from_main(torch.full((2,), float(rank))),
            "bn_mean": norm.running_mean.clone(),
            "bn_var": norm.running_var.clone(),
        }
        torch.save(result, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
