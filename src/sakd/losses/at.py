"""Zagoruyko & Komodakis ICLR 2017, "Paying More Attention to Attention" (RepDistiller ``Attention``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sakd.losses._weighting import check_weights, gated_batch_mean, match_spatial, require_maps
from sakd.losses.base import DistillContext, Distiller, DistillerParams
from sakd.losses.registry import register_distiller
from sakd.models.staged import SpotInfo


def attention_map(feature: Tensor, p: float) -> Tensor:
    """L2-normalised channel mean of f^p, flattened: (B, C, H, W) -> (B, H·W)."""
    return F.normalize(feature.pow(p).mean(dim=1).flatten(1), dim=1)


def at_per_sample(student: Tensor, teacher: Tensor, p: float) -> Tensor:
    """Mean squared difference of the attention maps per sample: (B, C, H, W) maps -> (B,)."""
    student, teacher = match_spatial(student, teacher)
    return (attention_map(student, p) - attention_map(teacher, p)).pow(2).mean(dim=1)


@register_distiller
class AT(Distiller):
    """Match spatial attention maps (channel mean of squared activations) at every stage."""

    name = "at"
    description = "Attention transfer: MSE between L2-normalised spatial attention maps per stage"
    spot_role = "stages"

    class Params(DistillerParams):
        """RepDistiller defaults."""

        p: float = 2.0

    params: Params

    def __init__(
        self,
        student_spots: Sequence[SpotInfo],
        teacher_spots: Sequence[SpotInfo],
        params: DistillerParams,
        num_classes: int,
        num_train: int,
    ) -> None:
        super().__init__(student_spots, teacher_spots, params, num_classes, num_train)
        require_maps(self.name, [*self.student_spots, *self.teacher_spots])

    def forward(
        self,
        student_feats: Sequence[Tensor],
        teacher_feats: Sequence[Tensor],
        weights: Tensor,
        ctx: DistillContext,
    ) -> Tensor:
        """Σ over spots of the gated AT loss; maps (B, C, H, W), weights (B, S); a scalar."""
        check_weights(weights, student_feats[0].shape[0], self.num_spots)
        spot_losses = [
            gated_batch_mean(at_per_sample(student, teacher.detach(), self.params.p), weights[:, k])
            for k, (student, teacher) in enumerate(zip(student_feats, teacher_feats, strict=True))
        ]
        return torch.stack(spot_losses).sum()
