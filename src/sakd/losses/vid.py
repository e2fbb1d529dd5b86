"""Ahn et al. CVPR 2019, "Variational Information Distillation" (RepDistiller ``VIDLoss``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sakd.losses._weighting import match_spatial
from sakd.losses.base import DistillContext, DistillerParams, DistillerSetup
from sakd.losses.per_sample import PerSampleDistiller
from sakd.losses.registry import register_distiller


class VIDHead(nn.Module):
    """Gaussian predictor of a teacher map from a student map: a 1×1-conv mean and a per-channel
    variance softplus(log_scale) + eps."""

    def __init__(
        self, student_channels: int, teacher_channels: int, init_pred_var: float, eps: float
    ) -> None:
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Conv2d(student_channels, teacher_channels, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(teacher_channels, teacher_channels, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(teacher_channels, teacher_channels, 1, bias=False),
        )
        # softplus⁻¹(init_pred_var − eps), so that the initial variance is init_pred_var
        initial = math.log(math.expm1(init_pred_var - eps))
        self.log_scale = nn.Parameter(torch.full((teacher_channels,), initial))
        self.eps = eps

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """Negative log-likelihood (up to a constant) averaged per sample: maps -> (B,)."""
        student, teacher = match_spatial(student, teacher)
        mean = self.regressor(student)
        variance = (F.softplus(self.log_scale) + self.eps).view(1, -1, 1, 1)
        neg_log_prob = 0.5 * ((mean - teacher).pow(2) / variance + variance.log())
        return neg_log_prob.flatten(1).mean(dim=1)


@register_distiller
class VID(PerSampleDistiller):
    """Maximise a variational lower bound on the mutual information between teacher and student."""

    name = "vid"
    description = "Variational information distillation: Gaussian NLL of teacher maps per stage"
    spot_role = "stages"
    random_logit_follows_last_spot = True  # train_random.py: no own logit-spot draw
    requires_maps = True

    class Params(DistillerParams):
        """RepDistiller ``VIDLoss`` defaults (middle channels = teacher channels)."""

        init_pred_var: float = 5.0
        eps: float = 1e-5

    params: Params

    def __init__(self, setup: DistillerSetup) -> None:
        super().__init__(setup)
        self.heads = nn.ModuleList(
            VIDHead(s.channels, t.channels, self.params.init_pred_var, self.params.eps)
            for s, t in zip(self.student_spots, self.teacher_spots, strict=True)
        )

    def spot_loss(self, k: int, student: Tensor, teacher: Tensor, ctx: DistillContext) -> Tensor:
        """VID loss of each sample at spot ``k``: maps (B, C, H, W) -> (B,)."""
        return self.heads[k](student, teacher)
