"""Spot selectors: per-sample, per-spot 0/1 distillation weights in four modes.

Every selector maps a :class:`SelectorInput` (the batch and both nets' outputs from the normal
pass) to a :class:`SpotSelection`: weights (B, K), columns 0..L−1 for the distiller's feature spots
and column K−1 for the logit spot, plus the routing loss in the adaptive and anti modes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sakd.collectives import global_rows
from sakd.errors import SakdError
from sakd.models.staged import SpotInfo, StagedNet
from sakd.seeding import SeededGenerator
from sakd.spot_modes import SpotMode
from sakd.spots.gumbel import GUMBEL_TAU, sample_gumbel, straight_through_gumbel
from sakd.spots.policy import SpotPolicy
from sakd.spots.routing import RoutedNetwork, make_adaptors


@dataclass
class SelectorInput:
    """One batch: images (B, C, H, W), labels (B,), full feature lists F and logits of both nets.

    The student's come from its train-mode forward, the teacher's from its frozen eval forward.
    """

    images: Tensor
    labels: Tensor
    student_feats: list[Tensor]
    teacher_feats: list[Tensor]
    student_logits: Tensor
    teacher_logits: Tensor


@dataclass
class SpotSelection:
    """Detached 0/1 weights (B, K), the routing loss (scalar or None) and scalars to log.

    ``ce_scale`` multiplies the student's cross-entropy (the authors' random-spot ablation scales
    it by γ; every other mode leaves it at 1).
    """

    weights: Tensor
    routing_loss: Tensor | None = None
    stats: dict[str, Tensor] = field(default_factory=dict)
    ce_scale: float = 1.0


class SpotSelector(nn.Module):
    """Base class: ``forward(SelectorInput) -> SpotSelection`` with K = len(spot_indices) + 1."""

    mode: ClassVar[SpotMode]

    def __init__(self, spot_indices: Sequence[int], seed: int = 0) -> None:
        super().__init__()
        self.spot_indices = list(spot_indices)
        self.num_spots = len(self.spot_indices) + 1
        self.rng = SeededGenerator(seed)

    def forward(self, inp: SelectorInput) -> SpotSelection:
        """Weights (B, K) for the batch in ``inp``."""
        raise NotImplementedError

    def get_extra_state(self) -> dict[str, Any]:
        """The random generator's state, so a resumed run draws the same decisions."""
        return self.rng.state_dict()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the random generator's state saved by :meth:`get_extra_state`."""
        self.rng.load_state_dict(state)


class FixedSelector(SpotSelector):
    """Every spot for every sample: the distiller as published ("Stan.")."""

    mode = SpotMode.FIXED

    def forward(self, inp: SelectorInput) -> SpotSelection:
        """All-ones weights (B, K)."""
        return SpotSelection(
            torch.ones(inp.images.shape[0], self.num_spots, device=inp.images.device)
        )


class RandomSelector(SpotSelector):
    """Bernoulli(0.5) per sample and spot, from the selector's own generator (ablation).

    ``ce_scale`` is handed to the task with every selection (the authors' ``train_random.py``
    multiplies the student CE by γ, ``spots.routing_ce_weight``). With ``tie_logit_spot`` the logit column is a copy of the last
    feature spot's column instead of its own draw (``train_random.py`` for AT, NST and VID).
    """

    mode = SpotMode.RANDOM

    def __init__(
        self,
        spot_indices: Sequence[int],
        seed: int = 0,
        *,
        ce_scale: float = 1.0,
        tie_logit_spot: bool = False,
    ) -> None:
        super().__init__(spot_indices, seed)
        self.ce_scale = float(ce_scale)
        self.tie_logit_spot = tie_logit_spot and self.num_spots > 1

    def forward(self, inp: SelectorInput) -> SpotSelection:
        """Random 0/1 weights (B, K)."""
        generator = self.rng.on(inp.images.device)
        columns = self.num_spots - 1 if self.tie_logit_spot else self.num_spots
        # Under torchrun: this rank's rows of the global batch's draw (sakd.collectives).
        uniform = global_rows(
            lambda shape: torch.rand(shape, generator=generator, device=generator.device),
            (inp.images.shape[0], columns),
        )
        weights = (uniform < 0.5).float()
        if self.tie_logit_spot:
            weights = torch.cat([weights, weights[:, -1:]], dim=1)
        return SpotSelection(weights, ce_scale=self.ce_scale)


class AdaptiveSelector(SpotSelector):
    """The paper's method: policy + straight-through Gumbel + routed network (method.md §1.3–1.8)."""

    mode = SpotMode.ADAPTIVE

    def __init__(
        self,
        student: StagedNet,
        teacher: StagedNet,
        spot_indices: Sequence[int],
        *,
        routing_ce_weight: float = 1.0,
        tau: float = GUMBEL_TAU,
        homogeneous: bool = False,
        input_size: int = 32,
        seed: int = 0,
        teacher_spot_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__(spot_indices, seed)
        self.teacher_spot_indices = (
            self.spot_indices if teacher_spot_indices is None else list(teacher_spot_indices)
        )
        self.routing_ce_weight = routing_ce_weight
        self.tau = tau
        student_spots = student.spot_info(input_size)
        teacher_spots = teacher.spot_info(input_size)
        self.policy = SpotPolicy(
            teacher_spots[-1].channels, student_spots[-1].channels, self.num_spots, homogeneous
        )
        self.s2t, self.t2s = make_adaptors(
            [student_spots[i] for i in self.spot_indices],
            [teacher_spots[i] for i in self.teacher_spot_indices],
        )
        self.routed = RoutedNetwork(
            student, teacher, self.spot_indices, self.s2t, self.t2s, self.teacher_spot_indices
        )

    def sample_decisions(self, inp: SelectorInput) -> Tensor:
        """Straight-through decisions a (B, K): exactly 0/1, gradient of the soft Gumbel sample."""
        logits = self.policy(inp.teacher_feats[-1], inp.student_feats[-1])
        generator = self.rng.on(logits.device)
        # Under torchrun: this rank's rows of the global batch's draw (sakd.collectives).
        noise = global_rows(lambda shape: sample_gumbel(shape, generator), tuple(logits.shape))
        return straight_through_gumbel(logits, noise, self.tau)[..., 0]

    def first_teacher_output(self, inp: SelectorInput) -> Tensor:
        """The teacher's first routed segment on the batch, taken from the normal pass."""
        if self.teacher_spot_indices:
            return inp.teacher_feats[self.teacher_spot_indices[0]]
        return inp.teacher_logits

    def forward(self, inp: SelectorInput) -> SpotSelection:
        """Decisions, the routed forward and the routing loss L_R."""
        decisions = self.sample_decisions(inp)
        mixed_logits = self.routed(inp.images, decisions, self.first_teacher_output(inp))
        routing_loss, stats = routing_objective(
            mixed_logits, inp.student_logits, inp.labels, decisions[:, -1], self.routing_ce_weight
        )
        return SpotSelection(self.gate(decisions.detach()), routing_loss, stats)

    def gate(self, decisions: Tensor) -> Tensor:
        """Distillation weights (B, K) from the detached decisions: distil on the teacher path."""
        return decisions


class AntiSelector(AdaptiveSelector):
    """Trained exactly like ``adaptive`` but distils exactly where it would not (ablation)."""

    mode = SpotMode.ANTI

    def gate(self, decisions: Tensor) -> Tensor:
        """Weights 1 − a (B, K): distil on the student path."""
        return 1 - decisions


def routing_objective(
    mixed_logits: Tensor, student_logits: Tensor, labels: Tensor, logit_choice: Tensor, gamma: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_R = w·CE(z_mix, y) + max(0, B/2 − Σ_i a_{i,K}) with the γ rule for w; and its parts.

    w = γ if CE(z_mix) > CE(z_S), 1/γ if smaller, 1 if equal (batch means, no gradient through
    the comparison). ``logit_choice`` is a_K (B,) with its straight-through gradient. The hinge has
    ReLU semantics: −1 per sample below B/2 and no gradient at the kink Σ a_K = B/2 (the authors'
    Python ``max(0, ·)`` returns the integer 0 there; ``clamp(min=0)`` would pass gradient −1).
    """
    routed_ce = F.cross_entropy(mixed_logits.float(), labels)
    student_ce = F.cross_entropy(student_logits.detach().float(), labels)
    detached_ce = routed_ce.detach()
    one = torch.ones_like(detached_ce)
    weight = torch.where(
        detached_ce > student_ce,
        one * gamma,
        torch.where(detached_ce < student_ce, one / gamma, one),
    )
    hinge = torch.relu(logit_choice.shape[0] / 2 - logit_choice.float().sum())
    stats = {"routing_ce": detached_ce, "hinge": hinge.detach(), "gamma_weight": weight}
    return weight * routed_ce + hinge, stats


def build_selector(
    mode: SpotMode,
    student: StagedNet,
    teacher: StagedNet,
    spot_indices: Sequence[int],
    *,
    routing_ce_weight: float = 1.0,
    tau: float = GUMBEL_TAU,
    homogeneous: bool = False,
    input_size: int = 32,
    seed: int = 0,
    random_scheme: str = "authors",
    logit_follows_last_spot: bool = False,
    teacher_spot_indices: Sequence[int] | None = None,
) -> SpotSelector:
    """The selector for ``mode`` over the feature spots ``spot_indices`` (+ the logit spot).

    The settings are the validated ``spots`` config values under their config names (``mode``,
    ``routing_ce_weight``, ``tau``, ``homogeneous``, ``random_scheme``); they are not checked
    again here. The teacher must be frozen (eval mode, ``requires_grad=False``), as the
    distillation task holds it. ``spot_indices`` are stage indices shared by both nets (ascending; may be empty).
    ``random_scheme`` (random mode only): ``authors`` reproduces ``train_random.py`` (student CE ×
    ``routing_ce_weight``; the logit column copies the last feature spot's when
    ``logit_follows_last_spot``, which the builder takes from the distiller: AT, NST, VID);
    ``independent`` draws every column on its own and leaves CE alone. ``teacher_spot_indices``:
    the teacher's stages paired in order with ``spot_indices`` when they differ (a pair with
    token maps, see :mod:`sakd.models.tokens`).
    """
    spots = [int(index) for index in spot_indices]
    teacher_spots = (
        spots if teacher_spot_indices is None else [int(i) for i in teacher_spot_indices]
    )
    _check_spots(spots, student, teacher, input_size, teacher_spots)
    if mode == SpotMode.FIXED:
        return FixedSelector(spots, seed)
    if mode == SpotMode.RANDOM:
        if random_scheme == "independent":
            return RandomSelector(spots, seed)
        return RandomSelector(
            spots, seed, ce_scale=routing_ce_weight, tie_logit_spot=logit_follows_last_spot
        )
    for role, net in (("student", student), ("teacher", teacher)):
        if net.spot_info(input_size)[-1].is_map:
            raise SakdError(
                f"the {role}'s last spot feature is a map, but the policy reads pooled vectors: "
                "end the staged network with a pooling stage"
            )
    selector_class = AdaptiveSelector if mode == SpotMode.ADAPTIVE else AntiSelector
    return selector_class(
        student,
        teacher,
        spots,
        routing_ce_weight=routing_ce_weight,
        tau=tau,
        homogeneous=homogeneous,
        input_size=input_size,
        seed=seed,
        teacher_spot_indices=teacher_spots,
    )


def _check_spots(
    spots: list[int],
    student: StagedNet,
    teacher: StagedNet,
    input_size: int,
    teacher_indices: list[int],
) -> None:
    """Spot indices must be ascending, exist in both nets and pair maps (or token maps) with maps."""
    for indices in (spots, teacher_indices):
        if indices != sorted(set(indices)):
            raise SakdError(
                f"spot indices {indices} must be strictly ascending: list each stage once"
            )
    if len(teacher_indices) != len(spots):
        raise SakdError(
            f"student spots {spots} and teacher spots {teacher_indices} must pair up: give as "
            "many of each"
        )
    limit = min(student.num_stages, teacher.num_stages)
    if teacher_indices == spots and spots and not 0 <= spots[0] <= spots[-1] < limit:
        raise SakdError(
            f"spot indices {spots} out of range: both nets have stages 0..{limit - 1} in common"
        )
    for indices, net, role in ((spots, student, "student"), (teacher_indices, teacher, "teacher")):
        if indices and not 0 <= indices[0] <= indices[-1] < net.num_stages:
            raise SakdError(
                f"{role} spot indices {indices} out of range: it has stages 0..{net.num_stages - 1}"
            )
    student_spots = student.spot_info(input_size)
    teacher_spots = teacher.spot_info(input_size)
    for index, t_index in zip(spots, teacher_indices, strict=True):
        student_spot, teacher_spot = student_spots[index], teacher_spots[t_index]
        if _kind(student_spot) != _kind(teacher_spot):
            raise SakdError(
                f"spot {index} pairs a {student_spot.shape} student feature with a "
                f"{teacher_spot.shape} teacher feature: choose spots of the same kind"
            )


def _kind(spot: SpotInfo) -> str:
    """``map`` for feature maps and token maps (adaptors bridge them), ``vector`` for pooled ones."""
    return "map" if spot.is_map or spot.is_tokens else "vector"
