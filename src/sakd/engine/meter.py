"""The epoch meter: per-step sums of the named losses and stats, one all-reduce, epoch means."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sakd.engine.distributed import all_reduce_sum
from sakd.engine.task_contract import StepResult


@dataclass
class EpochMeans:
    """An epoch's means over every sample of every rank: losses (floats) and stats (CPU tensors)."""

    seen: int
    losses: dict[str, float]
    stats: dict[str, Tensor]


class EpochMeter:
    """Sums each named loss and stat of a step times its batch size, on the device, without a sync.

    :meth:`means` sums the totals over the ranks in ONE all-reduce and divides by the samples seen.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seen = 0
        self.loss_sums: dict[str, Tensor] = {}
        self.stat_sums: dict[str, Tensor] = {}

    def add(self, result: StepResult, batch: int) -> None:
        """Add one step's losses and stats, each weighted by the step's ``batch`` samples."""
        self.seen += batch
        for name, value in result.losses.items():
            self.loss_sums[name] = self.loss_sums.get(name, 0) + value.detach().float() * batch
        for name, value in result.stats.items():
            self.stat_sums[name] = self.stat_sums.get(name, 0) + value.detach().float() * batch

    def non_finite_loss(self) -> str | None:
        """The name of a loss whose running sum is NaN/inf on this rank (None: all finite)."""
        for name, value in self.loss_sums.items():
            if not torch.isfinite(torch.as_tensor(value)).all():
                return name
        return None

    def means(self) -> EpochMeans:
        """Sum the totals over the ranks (one all-reduce) and divide by the samples seen."""
        summed = all_reduce_sum(
            {
                **{f"loss/{k}": v for k, v in self.loss_sums.items()},
                **{f"stat/{k}": v for k, v in self.stat_sums.items()},
                "seen": torch.tensor(float(self.seen), device=self.device),
            }
        )
        seen = int(summed.pop("seen"))
        count = max(seen, 1)
        losses = {
            k[len("loss/") :]: float(v) / count for k, v in summed.items() if k.startswith("loss/")
        }
        stats = {
            k[len("stat/") :]: (v / count).cpu() for k, v in summed.items() if k.startswith("stat/")
        }
        return EpochMeans(seen, losses, stats)
