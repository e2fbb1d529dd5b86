"""Zhao et al. CVPR 2022, "Decoupled Knowledge Distillation" (mdistiller ``DKD``).

``logit_standardization`` z-scores both logit vectors per sample first (Sun et al., CVPR 2024; see
:func:`sakd.losses.kd.standardize_logits`), as the LS authors' ``dkd_loss`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import Field, StrictBool
from torch import Tensor

from sakd.losses.base import DistillContext, DistillerParams
from sakd.losses.kd import standardize_logits
from sakd.losses.per_sample import PerSampleDistiller
from sakd.losses.registry import register_distiller

# Logit offset that removes the target class from the non-target distribution (mdistiller's value).
_TARGET_SUPPRESSION = 1000.0


def dkd_per_sample(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    logit_standardization: bool = False,
) -> Tensor:
    """α·TCKD + β·NCKD per sample, both KL terms times T²: logits (B, K), labels (B,) -> (B,).

    With ``logit_standardization`` both logit vectors are z-scored per sample before anything else.
    """
    if logit_standardization:
        student_logits = standardize_logits(student_logits)
        teacher_logits = standardize_logits(teacher_logits)
    target_mask = F.one_hot(labels.long(), student_logits.shape[1]).to(student_logits.dtype)
    p_student = F.softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)
    binary_student = _target_vs_rest(p_student, target_mask)
    binary_teacher = _target_vs_rest(p_teacher, target_mask)
    tckd = F.kl_div(torch.log(binary_student), binary_teacher, reduction="none").sum(dim=1)

    suppression = _TARGET_SUPPRESSION * target_mask
    log_p_student_rest = F.log_softmax(student_logits / temperature - suppression, dim=1)
    p_teacher_rest = F.softmax(teacher_logits / temperature - suppression, dim=1)
    nckd = F.kl_div(log_p_student_rest, p_teacher_rest, reduction="none").sum(dim=1)
    return (alpha * tckd + beta * nckd) * temperature**2


def _target_vs_rest(probs: Tensor, target_mask: Tensor) -> Tensor:
    """(B, K) class probabilities -> (B, 2) [p(target), p(not target)]."""
    target = (probs * target_mask).sum(dim=1, keepdim=True)
    rest = (probs * (1 - target_mask)).sum(dim=1, keepdim=True)
    return torch.cat([target, rest], dim=1)


@register_distiller
class DKD(PerSampleDistiller):
    """Target-class and non-target-class KD with separate weights and a linear warm-up."""

    name = "dkd"
    description = (
        "Decoupled KD: α·target-class KL + β·non-target-class KL, linearly warmed up "
        "(logit_standardization: z-scored logits, Sun et al. 2024)"
    )
    spot_role = "logits"

    class Params(DistillerParams):
        """mdistiller defaults (``cfg.DKD``); β is 8 for resnet32x4→resnet8x4, see the docs."""

        alpha: float = Field(default=1.0, ge=0)
        beta: float = Field(default=8.0, ge=0)
        temperature: float = Field(default=4.0, gt=0)
        warmup_epochs: int = Field(default=20, ge=0)
        logit_standardization: StrictBool = False

    params: Params

    def warmup_factor(self, epoch: int) -> float:
        """min((epoch + 1) / warmup_epochs, 1) for the 0-based ``epoch`` of sakd's trainer.

        mdistiller counts epochs from 1 and uses min(epoch / warmup, 1): its first epoch gets
        1/warmup, and so does sakd's epoch 0.
        """
        if self.params.warmup_epochs <= 0:
            return 1.0
        return min((max(epoch, 0) + 1) / self.params.warmup_epochs, 1.0)

    def spot_loss(self, k: int, student: Tensor, teacher: Tensor, ctx: DistillContext) -> Tensor:
        """DKD loss of each sample from the logits (B, K) and ``ctx.labels`` (B,) -> (B,)."""
        params = self.params
        return dkd_per_sample(
            student,
            teacher,
            ctx.labels,
            params.alpha,
            params.beta,
            params.temperature,
            params.logit_standardization,
        )

    def forward(
        self,
        student_feats: Sequence[Tensor],
        teacher_feats: Sequence[Tensor],
        weights: Tensor,
        ctx: DistillContext,
    ) -> Tensor:
        """Gated, warmed-up DKD on ``[logits]`` (B, K) with weights (B, 1); a scalar."""
        gated = super().forward(student_feats, teacher_feats, weights, ctx)
        return self.warmup_factor(ctx.epoch) * gated
