"""Hinton et al. 2015, "Distilling the Knowledge in a Neural Network" (RepDistiller ``DistillKL``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from sakd.losses._weighting import check_weights, gated_batch_mean
from sakd.losses.base import DistillContext, Distiller, DistillerParams
from sakd.losses.registry import register_distiller


def kd_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) per sample, summed over classes: (B, K) -> (B,)."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, p_teacher, reduction="none").sum(dim=1)
    return kl * temperature**2


@register_distiller
class KD(Distiller):
    """Soft-target KL divergence between temperature-scaled logits, times T²."""

    name = "kd"
    description = "Hinton KD: T²·KL between temperature-softened teacher and student logits"
    spot_role = "logits"

    class Params(DistillerParams):
        """Published defaults (RepDistiller ``--kd_T``)."""

        temperature: float = 4.0

    params: Params

    def forward(
        self,
        student_feats: Sequence[Tensor],
        teacher_feats: Sequence[Tensor],
        weights: Tensor,
        ctx: DistillContext,
    ) -> Tensor:
        """Gated KD on ``[logits]`` (B, K) with weights (B, 1); a scalar."""
        student_logits, teacher_logits = student_feats[0], teacher_feats[0].detach()
        check_weights(weights, student_logits.shape[0], 1)
        per_sample = kd_per_sample(student_logits, teacher_logits, self.params.temperature)
        return gated_batch_mean(per_sample, weights[:, 0])
