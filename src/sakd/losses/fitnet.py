"""Romero et al. ICLR 2015, "FitNets: Hints for Thin Deep Nets" (RepDistiller ``HintLoss``)."""

from __future__ import annotations

from torch import Tensor, nn

from sakd.losses.base import DistillContext, DistillerParams, DistillerSetup
from sakd.losses.per_sample import PerSampleDistiller
from sakd.losses.registry import register_distiller
from sakd.models.connectors import ConvReg
from sakd.models.token_adaptors import make_spot_adaptor


@register_distiller
class FitNet(PerSampleDistiller):
    """MSE between a regressed student hint and the teacher's feature at the second stage."""

    name = "fitnet"
    description = "FitNet: MSE between ConvReg(student stage-2 map) and the teacher's stage-2 map"
    spot_role = "stage:2"
    requires_maps = True
    accepts_tokens = True

    class Params(DistillerParams):
        """FitNet has no hyperparameters besides its spot (RepDistiller ``hint_layer=2``)."""

    def __init__(self, setup: DistillerSetup) -> None:
        super().__init__(setup)
        self.regressors = nn.ModuleList(
            make_spot_adaptor(s, t) if s.is_tokens or t.is_tokens else ConvReg(s.shape, t.shape)  # type: ignore[arg-type]
            for s, t in zip(self.student_spots, self.teacher_spots, strict=True)
        )

    def spot_loss(self, k: int, student: Tensor, teacher: Tensor, ctx: DistillContext) -> Tensor:
        """MSE between the regressed student map (or tokens) and the teacher's per sample: -> (B,)."""
        return (self.regressors[k](student) - teacher).pow(2).flatten(1).mean(dim=1)
