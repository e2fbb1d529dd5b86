"""Hinton et al. 2015, "Distilling the Knowledge in a Neural Network" (RepDistiller ``DistillKL``)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from sakd.losses.base import DistillContext, DistillerParams
from sakd.losses.per_sample import PerSampleDistiller
from sakd.losses.registry import register_distiller


def kd_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) per sample, summed over classes: (B, K) -> (B,)."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, p_teacher, reduction="none").sum(dim=1)
    return kl * temperature**2


@register_distiller
class KD(PerSampleDistiller):
    """Soft-target KL divergence between temperature-scaled logits, times T²."""

    name = "kd"
    description = "Hinton KD: T²·KL between temperature-softened teacher and student logits"
    spot_role = "logits"

    class Params(DistillerParams):
        """Published defaults (RepDistiller ``--kd_T``)."""

        temperature: float = 4.0

    params: Params

    def spot_loss(self, k: int, student: Tensor, teacher: Tensor, ctx: DistillContext) -> Tensor:
        """KD loss of each sample from the logits (B, K) -> (B,)."""
        return kd_per_sample(student, teacher, self.params.temperature)
