"""Distillers whose loss at a spot is a mean over samples of a per-sample term ℓ_i (B,).

:class:`PerSampleDistiller` holds what they share: the weight-shape check, detaching the teacher,
gating each spot's ℓ by its weight column (Σ_i w_i·ℓ_i / B, see :func:`gated_batch_mean`) and the
sum over spots. A subclass implements :meth:`PerSampleDistiller.spot_loss` (or, when a weight
column gates a loss that is not one spot's, overrides ``per_sample_losses``, as FSP does) and sets
``requires_maps`` when every spot must be a (C, H, W) map (``accepts_tokens``: or a token map).
:class:`InitialisationDistiller` adds RepDistiller's initialisation-method behaviour (AB, FSP).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from sakd.losses._weighting import check_weights, gated_batch_mean, require_maps, zero_loss
from sakd.losses.base import DistillContext, Distiller, DistillerSetup


class PerSampleDistiller(Distiller):
    """Σ over spots of the gated per-sample loss; subclasses implement :meth:`spot_loss`."""

    requires_maps: ClassVar[bool] = False
    # With requires_maps: transformer token maps are accepted too (sakd.losses.tokens).
    accepts_tokens: ClassVar[bool] = False

    def __init__(self, setup: DistillerSetup) -> None:
        super().__init__(setup)
        if self.requires_maps:
            require_maps(self.name, [*self.student_spots, *self.teacher_spots], self.accepts_tokens)

    def spot_loss(self, k: int, student: Tensor, teacher: Tensor, ctx: DistillContext) -> Tensor:
        """Loss of each sample (B,) at spot ``k``; ``teacher`` is already detached."""
        raise NotImplementedError

    def per_sample_losses(
        self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], ctx: DistillContext
    ) -> dict[int, Tensor]:
        """Per weight column k, the per-sample loss (B,) it gates: :meth:`spot_loss` at every spot."""
        return {
            k: self.spot_loss(k, student, teacher.detach(), ctx)
            for k, (student, teacher) in enumerate(zip(student_feats, teacher_feats, strict=True))
        }

    def forward(
        self,
        student_feats: Sequence[Tensor],
        teacher_feats: Sequence[Tensor],
        weights: Tensor,
        ctx: DistillContext,
    ) -> Tensor:
        """Σ over columns k of Σ_i w_ik·ℓ_ik / B; features (B, ...), weights (B, S); a scalar."""
        check_weights(weights, student_feats[0].shape[0], self.num_spots)
        losses = self.per_sample_losses(student_feats, teacher_feats, ctx)
        return torch.stack(
            [gated_batch_mean(loss, weights[:, k]) for k, loss in losses.items()]
        ).sum()


class InitialisationDistiller(PerSampleDistiller):
    """A per-sample distiller that RepDistiller uses as an initialisation method (AB, FSP).

    Its pre-training stage trains the student on the ungated loss; the main stage adds an exact 0
    unless ``params.main_stage`` is set (``Params`` must declare ``main_stage: bool``).
    """

    pretrain_trains_student = True

    def forward(
        self,
        student_feats: Sequence[Tensor],
        teacher_feats: Sequence[Tensor],
        weights: Tensor,
        ctx: DistillContext,
    ) -> Tensor:
        """Main-stage term: exactly 0 (RepDistiller) unless ``main_stage``; then the gated loss."""
        if self.params.main_stage:  # type: ignore[attr-defined]
            return super().forward(student_feats, teacher_feats, weights, ctx)
        check_weights(weights, student_feats[0].shape[0], self.num_spots)
        return zero_loss(student_feats[0])

    def pretrain_loss(
        self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], ctx: DistillContext
    ) -> Tensor:
        """Σ over columns of the per-sample loss averaged over the whole batch: a scalar."""
        losses = self.per_sample_losses(student_feats, teacher_feats, ctx)
        return torch.stack([loss.mean() for loss in losses.values()]).sum()
