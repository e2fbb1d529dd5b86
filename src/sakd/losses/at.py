"""Zagoruyko & Komodakis ICLR 2017, "Paying More Attention to Attention" (RepDistiller ``Attention``)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from sakd.losses._weighting import match_spatial
from sakd.losses.base import DistillContext, DistillerParams
from sakd.losses.per_sample import PerSampleDistiller
from sakd.losses.registry import register_distiller
from sakd.losses.tokens import spatial_view


def attention_map(feature: Tensor, p: float) -> Tensor:
    """L2-normalised channel mean of f^p, flattened: (B, C, H, W) -> (B, H·W)."""
    return F.normalize(feature.pow(p).mean(dim=1).flatten(1), dim=1)


def at_per_sample(student: Tensor, teacher: Tensor, p: float) -> Tensor:
    """Mean squared difference of the attention maps per sample: (B, C, H, W) maps -> (B,)."""
    student, teacher = match_spatial(student, teacher)
    return (attention_map(student, p) - attention_map(teacher, p)).pow(2).mean(dim=1)


@register_distiller
class AT(PerSampleDistiller):
    """Match spatial attention maps (channel mean of squared activations) at every stage."""

    name = "at"
    description = "Attention transfer: MSE between L2-normalised spatial attention maps per stage"
    spot_role = "stages"
    random_logit_follows_last_spot = True  # train_random.py: no own logit-spot draw
    requires_maps = True
    accepts_tokens = True

    class Params(DistillerParams):
        """RepDistiller defaults."""

        p: float = 2.0

    params: Params

    def spot_loss(self, k: int, student: Tensor, teacher: Tensor, ctx: DistillContext) -> Tensor:
        """AT loss of each sample at spot ``k``: maps (B, C, H, W) or token maps (B, N, C) -> (B,)."""
        s_spot, t_spot = self.student_spots[k], self.teacher_spots[k]
        if s_spot.is_tokens or t_spot.is_tokens:
            student, teacher = spatial_view(student, s_spot), spatial_view(teacher, t_spot)
        return at_per_sample(student, teacher, self.params.p)
