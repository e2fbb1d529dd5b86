"""Rank-aware collectives that any layer may use: rank and world size, shared draws, gathers, sums.

Every function here reads the default process group (set up by :mod:`sakd.engine.distributed`
under ``torchrun``) and is a no-op, or the identity, in a plain single process. This module is a
leaf: it imports nothing from sakd, so ``losses/``, ``spots/``, ``models/`` and ``data/`` can use
it without depending on the engine. Launching, DDP wrapping, rank-0 side effects and BatchNorm
averaging stay in the engine.

Shared random draws follow one rule: a draw that belongs to samples (Gumbel noise, random spot
choices, CRD's negatives) is made for the whole global batch from a generator in the same state on
every rank, and each rank keeps its own rows (:func:`global_rows`), so a W-rank run draws exactly
what a single process with the global batch draws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

T = TypeVar("T")


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_from_main(value: T) -> T:
    """Rank 0's ``value`` on every rank (pickled; tensors should be on the CPU)."""
    if rank_and_world_size()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over the ranks in place (no-op in a single process); returns it."""
    if rank_and_world_size()[1] > 1:
        dist.all_reduce(tensor)
    return tensor


def all_reduce_flat(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Element-wise float64 sums over the ranks of several tensors, in one collective.

    Returns new tensors of the inputs' shapes (the inputs are not changed); in a single process,
    float64 copies of the inputs.
    """
    if not tensors:
        return []
    flat = torch.cat([tensor.detach().reshape(-1).double() for tensor in tensors])
    all_reduce_(flat)
    out, start = [], 0
    for tensor in tensors:
        out.append(flat[start : start + tensor.numel()].reshape(tensor.shape))
        start += tensor.numel()
    return out


def all_reduce_sum(values: dict[str, Tensor]) -> dict[str, Tensor]:
    """Element-wise sums over the ranks of a dict of tensors (one collective); float64 results.

    A single process gets ``values`` back unchanged.
    """
    if rank_and_world_size()[1] == 1 or not values:
        return values
    return dict(zip(values, all_reduce_flat(list(values.values())), strict=True))


def global_rows(draw: Callable[[tuple[int, ...]], Tensor], shape: tuple[int, ...]) -> Tensor:
    """This rank's rows (B, ...) of ``draw((W·B, ...))``, the draw for the whole global batch.

    ``draw`` must use a generator in the same state on every rank. Row ``j`` of rank ``r`` is row
    ``r + W·j`` of the global draw: the global-batch position of the rank's ``j``-th sample.
    """
    rank, world_size = rank_and_world_size()
    shape = tuple(shape)
    if world_size == 1:
        return draw(shape)
    full = draw((shape[0] * world_size, *shape[1:]))
    return full[rank::world_size]


def gather_global_rows(rows: Tensor) -> Tensor:
    """Every rank's (B, ...) rows in global-batch order: (W·B, ...), row ``r + W·j`` from rank r.

    All ranks must pass tensors of the same shape; the result carries no gradient.
    """
    world_size = rank_and_world_size()[1]
    if world_size == 1:
        return rows
    parts = [torch.empty_like(rows) for _ in range(world_size)]
    dist.all_gather(parts, rows.detach().contiguous())
    return torch.stack(parts, 1).reshape(rows.shape[0] * world_size, *rows.shape[1:])
