"""Data-parallel training with ``torchrun``: process group, rank-0 side effects, DDP, shared draws.

``torchrun --nproc_per_node=N -m sakd distill ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set. :func:`join_launch` turns that into a process group (NCCL on
CUDA, gloo on the CPU) and one device per local rank. The rest of sakd asks
:func:`sakd.collectives.rank_and_world_size`, which reads the default process group, so a plain
single process never pays for any of this. The collectives themselves (shared draws, gathers,
sums) live in the leaf module :mod:`sakd.collectives`; this module keeps launching, rank-0 side
effects, DDP wrapping and BatchNorm averaging.

The rules a multi-rank run follows (``docs/performance.md`` explains them):

* **Batches.** ``batch_size`` is per rank; rank ``r`` takes positions ``r, r + W, ...`` of every
  epoch order (:func:`sakd.data.iterate_batches`), so the union of the ranks' ``k``-th batches is
  the ``k``-th batch of a single process with batch ``W × batch_size``, interleaved.
* **Shared random draws.** Draws that belong to samples (Gumbel noise, random spot choices, CRD's
  negatives) are made for the whole global batch from a generator that is identical on every rank,
  and each rank keeps its own rows (:func:`sakd.collectives.global_rows`): a W-rank run draws
  exactly what the single process with the global batch draws.
* **What differs from that single process:** statistics taken over a batch see the rank's batch
  only — BatchNorm in train mode, the routing hinge and γ rule, relational distillers (SP, CC,
  RKD, PKT). BatchNorm running statistics are averaged over the ranks at the end of every epoch.
* **Side effects** (files, progress bars) happen on rank 0 only, inside :func:`on_main_rank`,
  which also makes every rank wait and re-raises rank 0's error on all of them.
"""

from __future__ import annotations

import atexit
import datetime
import gc
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from sakd.collectives import (
    all_reduce_,
    all_reduce_flat,
    all_reduce_sum,
    broadcast_from_main,
    gather_global_rows,
    global_rows,
    rank_and_world_size,
)
from sakd.engine.task_contract import Phase, StepResult
from sakd.errors import SakdError

# The collectives live in the leaf module sakd.collectives (layers below the engine use them
# there); the engine's modules may keep importing them from here.
__all__ = [
    "DataParallelPhase",
    "Launch",
    "all_reduce_",
    "all_reduce_sum",
    "average_batchnorm_statistics",
    "broadcast_from_main",
    "gather_global_rows",
    "global_rows",
    "join_launch",
    "launch_from_env",
    "on_main_rank",
    "rank_and_world_size",
    "resolve_device",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a ``torchrun`` launch (rank 0 of 1 when not launched by it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def launch_from_env() -> Launch:
    """The ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` variables that ``torchrun`` sets."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise SakdError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers: start the run with torchrun"
        ) from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise SakdError(
            f"RANK={rank} is outside WORLD_SIZE={world_size}: start the run with torchrun"
        )
    return Launch(rank, world_size, local_rank)


def resolve_device(device: str, launch: Launch) -> str:
    """The device of this rank: ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` in a multi-rank run."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not launch.distributed or device == "cpu":
        return device
    if device != "cuda":
        raise SakdError(
            f"device={device!r} names one GPU but torchrun started {launch.world_size} processes: "
            "use device=cuda (rank r takes cuda:LOCAL_RANK) or device=auto"
        )
    if not torch.cuda.is_available():
        raise SakdError("device 'cuda' requested but CUDA is not available: use device=cpu")
    if launch.local_rank >= torch.cuda.device_count():
        raise SakdError(
            f"LOCAL_RANK={launch.local_rank} but this machine has {torch.cuda.device_count()} "
            "GPU(s): start at most one process per GPU (torchrun --nproc_per_node)"
        )
    return f"cuda:{launch.local_rank}"


COLLECTIVE_TIMEOUT_ENV = "SAKD_COLLECTIVE_TIMEOUT_S"
DEFAULT_COLLECTIVE_TIMEOUT_S = 1800


def collective_timeout() -> datetime.timedelta:
    """How long a rank waits for the others in one collective before failing (``SAKD_COLLECTIVE_TIMEOUT_S``, default 30 min)."""
    raw = os.environ.get(COLLECTIVE_TIMEOUT_ENV, str(DEFAULT_COLLECTIVE_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise SakdError(f"{COLLECTIVE_TIMEOUT_ENV}={raw!r} must be a positive number of seconds")
    return datetime.timedelta(seconds=seconds)


def join_launch(device: str) -> str:
    """Join the ``torchrun`` process group (if any, once per process); returns this rank's device.

    Without ``torchrun`` (or with one process) nothing is initialised. Every collective of the
    group fails after :func:`collective_timeout`. The group stays open for
    later runs of the same process (a process group cannot be re-created reliably on the same
    rendezvous) and is destroyed when the process exits.
    """
    launch = launch_from_env()
    resolved = resolve_device(device, launch)
    if launch.distributed and not dist.is_initialized():
        backend = "nccl" if resolved.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(torch.device(resolved))
        # A bounded wait: a hung or dead rank makes the others fail with a line naming their rank
        # (sakd.cli) instead of blocking forever.
        dist.init_process_group(backend, timeout=collective_timeout())
        atexit.register(_leave_launch)
    elif launch.distributed and resolved.startswith("cuda"):
        torch.cuda.set_device(torch.device(resolved))
    return resolved


def _leave_launch() -> None:
    """At exit: wait for the other ranks, then close the group (tearing gloo down while a peer
    is still using it can abort the process with ``terminate called``)."""
    if not dist.is_initialized():
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
        else:
            dist.barrier()
    except RuntimeError:
        pass
    dist.destroy_process_group()


def on_main_rank(action: Callable[[], T]) -> T | None:
    """Run ``action`` on rank 0 only; every rank waits for it and raises if it failed.

    Returns the action's result on rank 0 and None elsewhere. A :class:`SakdError` on rank 0 is
    raised again, with the same message, on every rank; any other exception is raised as it is on
    rank 0 and as a :class:`RuntimeError` naming it on the others.
    """
    rank, world_size = rank_and_world_size()
    if world_size == 1:
        return action()
    outcome: list[Any] = [None]
    result: T | None = None
    failure: BaseException | None = None
    if rank == 0:
        try:
            result = action()
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the others are told
            failure = exc
            outcome[0] = (isinstance(exc, SakdError), f"{type(exc).__name__}: {exc}", str(exc))
    dist.broadcast_object_list(outcome, src=0)
    if failure is not None:
        raise failure
    if outcome[0] is not None:
        is_user_error, described, message = outcome[0]
        if is_user_error:
            raise SakdError(message)
        raise RuntimeError(f"rank 0 failed ({described}); this rank stops too")
    return result


def average_batchnorm_statistics(module: nn.Module) -> None:
    """Replace every BatchNorm running mean and variance in ``module`` by its mean over the ranks.

    The running mean then equals the running mean of the global batch's means (it is linear in
    them); the running variance is the mean of the ranks' variances.
    """
    world_size = rank_and_world_size()[1]
    if world_size == 1:
        return
    buffers = [
        buffer
        for sub in module.modules()
        if isinstance(sub, nn.modules.batchnorm._NormBase) and sub.track_running_stats
        for buffer in (sub.running_mean, sub.running_var)
        if buffer is not None
    ]
    for buffer, total in zip(buffers, all_reduce_flat(buffers), strict=True):
        buffer.copy_(total / world_size)


class _PhaseModule(nn.Module):
    """A phase's step as a module forward, so DDP sees the call; returns pytree-friendly tuples."""

    def __init__(self, task: nn.Module, step: Callable) -> None:
        super().__init__()
        self.task = task
        self.step_fn = step

    def forward(
        self, images: Tensor, labels: Tensor, index: Tensor, epoch: int
    ) -> tuple[dict[str, Tensor], Tensor | None, dict[str, Tensor]]:
        """(losses dict, logits, stats dict) of the wrapped step."""
        result = self.step_fn(images, labels, index, epoch)
        return result.losses, result.logits, result.stats


class DataParallelPhase:
    """A phase whose step runs through ``DistributedDataParallel``; use as a context manager.

    The task (student, distiller parts, selector) is wrapped; the frozen teacher is not part of
    it. ``static_graph`` lets DDP learn once which parameters a phase never uses (FT's paraphraser
    in the main phase, the student's head in AB's pre-training): their gradients stay ``None``, so
    the optimizer leaves them alone exactly as in a single process. Buffers are not broadcast at
    every step (CRD's memory banks are kept identical by construction, BatchNorm statistics are
    averaged once per epoch).
    """

    def __init__(self, task: nn.Module, phase: Phase) -> None:
        from torch.nn.parallel import DistributedDataParallel

        self._module: DistributedDataParallel | None = DistributedDataParallel(
            _PhaseModule(task, phase.step), static_graph=True, **_no_buffer_sync()
        )

        def step(images: Tensor, labels: Tensor, index: Tensor, epoch: int) -> StepResult:
            assert self._module is not None
            losses, logits, stats = self._module(images, labels, index, epoch)
            return StepResult(losses, logits, stats)

        self.phase = replace(phase, step=step)

    def __enter__(self) -> Phase:
        """The wrapped phase (same groups and epochs, step through DDP)."""
        return self.phase

    def __exit__(self, *exc_info: object) -> None:
        # The DDP reducer's gradient hooks live as long as the wrapper: drop it before the next
        # phase wraps the same parameters.
        self._module = None
        gc.collect()


def _no_buffer_sync() -> dict[str, bool]:
    """DDP keyword that turns off the per-forward buffer broadcast (renamed in newer torch)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}
