"""Romero et al. ICLR 2015, "FitNets: Hints for Thin Deep Nets" (RepDistiller ``HintLoss``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sakd.losses._weighting import check_weights, gated_batch_mean, require_maps
from sakd.losses.base import DistillContext, Distiller, DistillerParams
from sakd.losses.registry import register_distiller
from sakd.models.connectors import ConvReg
from sakd.models.staged import SpotInfo


@register_distiller
class FitNet(Distiller):
    """MSE between a regressed student hint and the teacher's feature at the second stage."""

    name = "fitnet"
    description = "FitNet: MSE between ConvReg(student stage-2 map) and the teacher's stage-2 map"
    spot_role = "stage:2"

    class Params(DistillerParams):
        """FitNet has no hyperparameters besides its spot (RepDistiller ``hint_layer=2``)."""

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
        self.regressors = nn.ModuleList(
            ConvReg(s.shape, t.shape)  # type: ignore[arg-type]
            for s, t in zip(self.student_spots, self.teacher_spots, strict=True)
        )

    def forward(
        self,
        student_feats: Sequence[Tensor],
        teacher_feats: Sequence[Tensor],
        weights: Tensor,
        ctx: DistillContext,
    ) -> Tensor:
        """Σ over spots of the gated MSE; features (B, C, H, W), weights (B, S); a scalar."""
        check_weights(weights, student_feats[0].shape[0], self.num_spots)
        spot_losses = []
        for k, (regressor, student, teacher) in enumerate(
            zip(self.regressors, student_feats, teacher_feats, strict=True)
        ):
            per_sample = (regressor(student) - teacher.detach()).pow(2).flatten(1).mean(dim=1)
            spot_losses.append(gated_batch_mean(per_sample, weights[:, k]))
        return torch.stack(spot_losses).sum()
