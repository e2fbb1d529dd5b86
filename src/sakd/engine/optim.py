"""A phase's optimisers, learning-rate schedules, gradient clipping and weight average, from torch.

Each non-empty :class:`~sakd.engine.task_contract.ParamGroup` gets one ``torch.optim`` optimiser
(``sgd``, ``adam``, ``adamw``) and one ``torch.optim.lr_scheduler`` schedule, stepped after every
optimiser step:

* ``step`` (a ``LambdaLR``): lr × ``lr_decay`` ** (milestones reached by the iteration's epoch),
  the very value the per-epoch step decay of earlier sakd set, constant within an epoch;
* ``cosine`` (``CosineAnnealingLR``) and ``linear`` (``LinearLR``) from lr to ``min_lr`` at the
  phase's last iteration; ``constant`` (``ConstantLR`` at factor 1);
* with ``warmup_epochs`` > 0 a ``LinearLR`` from 1 % of lr to lr comes first (``SequentialLR``).

A group on the ``step`` schedule (the authors' rule for the policy and adaptors) and the groups of a
phase without ``decay`` (pre-training stages) ignore ``schedule.name``, the warm-up and
``min_lr``. ``min_lr`` is the student's final lr; a group with another lr ends at the same fraction
of it. The exponential moving average of the student (``ema.decay`` > 0) is a
``torch.optim.swa_utils.AveragedModel`` updated after every step of the main phase.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
)
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from sakd.config import ScheduleConfig
from sakd.engine.task_contract import ParamGroup, Phase

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}
# The warm-up starts at this fraction of the learning rate (as torchvision's reference recipes).
WARMUP_START_FACTOR = 0.01


def make_optimizer(group: ParamGroup, lr: float) -> Optimizer:
    """The ``torch.optim`` optimiser ``group`` names, over its parameters, at learning rate ``lr``."""
    if group.optimizer == "sgd":
        return torch.optim.SGD(
            group.params,
            lr=lr,
            momentum=group.momentum,
            weight_decay=group.weight_decay,
            nesterov=group.nesterov,
        )
    settings: dict[str, Any] = {"lr": lr, "weight_decay": group.weight_decay}
    if group.betas is not None:
        settings["betas"] = tuple(group.betas)
    if group.eps is not None:
        settings["eps"] = group.eps
    return OPTIMIZERS[group.optimizer](group.params, **settings)


def make_optimizers(phase: Phase, lr_scale: float = 1) -> dict[str, Optimizer]:
    """One optimiser per non-empty parameter group of ``phase`` (lr × ``lr_scale``)."""
    return {
        name: make_optimizer(group, group.lr * lr_scale)
        for name, group in phase.groups.items()
        if group.params
    }


def step_factor(
    schedule: ScheduleConfig, epochs: int, steps_per_epoch: int, offset: int = 0
) -> Callable[[int], float]:
    """The step decay's lr factor at iteration ``offset + i`` of a phase of ``epochs`` epochs."""
    milestones = schedule.scaled_milestones(epochs)
    decay = schedule.lr_decay

    def factor(step: int) -> float:
        epoch = (step + offset) // steps_per_epoch
        return decay ** sum(epoch >= m for m in milestones)

    return factor


def make_scheduler(
    optimizer: Optimizer,
    group: ParamGroup,
    schedule: ScheduleConfig,
    *,
    decay: bool,
    epochs: int,
    steps_per_epoch: int,
    min_lr_fraction: float,
) -> LRScheduler:
    """The schedule of one group's optimiser over a phase, stepped once per iteration."""
    if not decay:
        return ConstantLR(optimizer, factor=1.0, total_iters=0)
    if group.schedule == "step":
        return LambdaLR(optimizer, step_factor(schedule, epochs, steps_per_epoch))
    total = epochs * steps_per_epoch
    warmup = min(round(schedule.warmup_epochs * steps_per_epoch), total - 1)
    main_iters = total - warmup
    base_lr = optimizer.param_groups[0]["lr"]
    main: LRScheduler
    if schedule.name == "step":
        main = LambdaLR(optimizer, step_factor(schedule, epochs, steps_per_epoch, warmup))
    elif schedule.name == "cosine":
        main = CosineAnnealingLR(optimizer, T_max=main_iters, eta_min=base_lr * min_lr_fraction)
    elif schedule.name == "linear":
        main = LinearLR(
            optimizer, start_factor=1.0, end_factor=min_lr_fraction, total_iters=main_iters
        )
    else:
        main = ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    warm = LinearLR(optimizer, start_factor=WARMUP_START_FACTOR, total_iters=warmup)
    return SequentialLR(optimizer, [warm, main], milestones=[warmup])


@dataclass
class Optimisation:
    """A phase's optimisers with their schedules and gradient-norm limits, stepped together."""

    optimizers: dict[str, Optimizer]
    schedulers: dict[str, LRScheduler]
    clip_norms: dict[str, float]

    def zero_grad(self) -> None:
        """Drop every optimiser's gradients."""
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """Clip (where asked), step every optimiser, then its schedule."""
        for name, optimizer in self.optimizers.items():
            limit = self.clip_norms.get(name)
            if limit is not None:
                params = [p for g in optimizer.param_groups for p in g["params"]]
                nn.utils.clip_grad_norm_(params, limit)
            optimizer.step()
            self.schedulers[name].step()

    def lrs(self) -> dict[str, float]:
        """Each optimiser's current learning rate."""
        return {name: float(o.param_groups[0]["lr"]) for name, o in self.optimizers.items()}

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """The optimisers' and schedules' states (checkpoint entries ``optimizers``, ``schedulers``)."""
        return {
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
        }


def make_optimisation(
    phase: Phase,
    schedule: ScheduleConfig,
    *,
    lr_scale: float,
    steps_per_epoch: int,
    min_lr_fraction: float,
) -> Optimisation:
    """Optimisers and schedules for ``phase`` (``steps_per_epoch`` iterations an epoch)."""
    optimizers = make_optimizers(phase, lr_scale)
    schedulers = {
        name: make_scheduler(
            optimizer,
            phase.groups[name],
            schedule,
            decay=phase.decay,
            epochs=phase.epochs,
            steps_per_epoch=steps_per_epoch,
            min_lr_fraction=min_lr_fraction,
        )
        for name, optimizer in optimizers.items()
    }
    clip = {
        name: float(phase.groups[name].clip_grad_norm)
        for name in optimizers
        if phase.groups[name].clip_grad_norm is not None
    }
    return Optimisation(optimizers, schedulers, clip)


def fast_forward(optimisation: Optimisation, steps: int) -> None:
    """Advance freshly built schedules by ``steps`` iterations (no optimiser step is taken)."""
    with warnings.catch_warnings():
        # The schedules warn when stepped before their optimiser: intended here.
        warnings.simplefilter("ignore", UserWarning)
        for scheduler in optimisation.schedulers.values():
            for _ in range(steps):
                scheduler.step()


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s parameters and buffers (a copy of it)."""
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    # A compiled network's forward is an instance attribute bound to the original: evaluate the
    # copy through its class's own forward instead.
    for attr in ("forward", "forward_features"):
        ema.module.__dict__.pop(attr, None)
    return ema


def ema_state(ema: AveragedModel) -> dict[str, Any]:
    """The checkpoint entry ``ema``: the averaged student's state dict and the number of updates."""
    return {"student": ema.module.state_dict(), "updates": int(ema.n_averaged.item())}


def load_ema_state(ema: AveragedModel, state: dict[str, Any]) -> None:
    """Restore an average from its :func:`ema_state` (strict; raises on a mismatch)."""
    ema.module.load_state_dict(state["student"], strict=True)
    updates = state["updates"]
    if not isinstance(updates, int) or isinstance(updates, bool) or updates < 0:
        raise ValueError("malformed EMA update count")
    ema.n_averaged.fill_(updates)


def min_lr_fraction(schedule: ScheduleConfig, lr: float) -> float:
    """``min_lr`` as a fraction of the student's lr (0 when there is none)."""
    return schedule.min_lr / lr
