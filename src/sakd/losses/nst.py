"""Huang & Wang 2017, "Like What You Like: Neuron Selectivity Transfer" (RepDistiller ``NSTLoss``)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from sakd.losses._weighting import match_spatial
from sakd.losses.base import DistillContext, DistillerParams
from sakd.losses.per_sample import PerSampleDistiller
from sakd.losses.registry import register_distiller


def nst_per_sample(student: Tensor, teacher: Tensor) -> Tensor:
    """Squared MMD with the kernel k(x, y) = (xᵀy)² between channel activation patterns, per sample.

    Each channel's spatial pattern is L2-normalised; the MMD is the full one (teacher-teacher,
    student-student and cross terms), each term a mean over channel pairs: maps (B, C, H, W) -> (B,).
    """
    student, teacher = match_spatial(student, teacher)
    student = F.normalize(student.flatten(2), dim=2)
    teacher = F.normalize(teacher.flatten(2), dim=2)
    c_s, c_t, positions = student.shape[1], teacher.shape[1], student.shape[2]
    if positions * (c_s + c_t) < c_s * c_t:
        # Σ_jk (a_j·b_k)² = <AᵀA, BᵀB>: cheaper through the (H·W)² Gram matrices when H·W is small.
        gram_s = student.transpose(1, 2) @ student
        gram_t = teacher.transpose(1, 2) @ teacher
        sum_ss = gram_s.pow(2).sum(dim=(1, 2))
        sum_tt = gram_t.pow(2).sum(dim=(1, 2))
        sum_st = (gram_s * gram_t).sum(dim=(1, 2))
    else:
        sum_ss = (student @ student.transpose(1, 2)).pow(2).sum(dim=(1, 2))
        sum_tt = (teacher @ teacher.transpose(1, 2)).pow(2).sum(dim=(1, 2))
        sum_st = (teacher @ student.transpose(1, 2)).pow(2).sum(dim=(1, 2))
    return sum_tt / c_t**2 + sum_ss / c_s**2 - 2 * sum_st / (c_s * c_t)


@register_distiller
class NST(PerSampleDistiller):
    """Match the distributions of channel activation patterns by a polynomial-kernel MMD per stage."""

    name = "nst"
    description = "Neuron selectivity transfer: degree-2 polynomial-kernel MMD between channels"
    spot_role = "stages"
    random_logit_follows_last_spot = True  # train_random.py: no own logit-spot draw
    requires_maps = True

    class Params(DistillerParams):
        """NST has no hyperparameters in RepDistiller (kernel fixed to (xᵀy)², full MMD)."""

    def spot_loss(self, k: int, student: Tensor, teacher: Tensor, ctx: DistillContext) -> Tensor:
        """NST loss of each sample at spot ``k``: maps (B, C, H, W) -> (B,)."""
        return nst_per_sample(student, teacher)
