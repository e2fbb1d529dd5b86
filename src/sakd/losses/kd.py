"""Hinton et al. 2015, "Distilling the Knowledge in a Neural Network" (RepDistiller ``DistillKL``).

With ``logit_standardization`` (Sun et al., CVPR 2024, "Logit Standardization in Knowledge
Distillation"), both logit vectors are z-scored per sample before the temperature softmax; the
temperature is then the paper's *base* temperature (its code: 2 on most CIFAR-100 pairs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, StrictBool
from torch import Tensor

from sakd.losses.base import DistillContext, DistillerParams
from sakd.losses.per_sample import PerSampleDistiller
from sakd.losses.registry import register_distiller

# Added to the standard deviation before dividing (the LS authors' ``normalize``: 1e-7 + std).
LS_EPSILON = 1e-7


def standardize_logits(logits: Tensor, eps: float = LS_EPSILON) -> Tensor:
    """(z − mean(z)) / (eps + std(z)) per sample over the classes: (B, K) -> (B, K).

    ``std`` is the sample standard deviation (K − 1 in the denominator, ``torch.std``'s default and
    the authors' code). Half-precision logits are standardised in float32.
    """
    if logits.shape[1] < 2:
        raise ValueError(f"logit standardisation needs at least 2 classes, got {logits.shape[1]}")
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    mean = z.mean(dim=1, keepdim=True)
    std = z.std(dim=1, keepdim=True)
    return (z - mean) / (eps + std)


def kd_per_sample(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float,
    logit_standardization: bool = False,
) -> Tensor:
    """T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) per sample, summed over classes: (B, K) -> (B,).

    With ``logit_standardization`` both z are first replaced by :func:`standardize_logits`.
    """
    if logit_standardization:
        student_logits = standardize_logits(student_logits)
        teacher_logits = standardize_logits(teacher_logits)
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, p_teacher, reduction="none").sum(dim=1)
    return kl * temperature**2


@register_distiller
class KD(PerSampleDistiller):
    """Soft-target KL divergence between temperature-scaled logits, times T²."""

    name = "kd"
    description = (
        "Hinton KD: T²·KL between temperature-softened teacher and student logits "
        "(logit_standardization: z-scored logits, Sun et al. 2024)"
    )
    spot_role = "logits"

    class Params(DistillerParams):
        """Published defaults (RepDistiller ``--kd_T``); LS off (its recipes set T and the flag)."""

        temperature: float = Field(default=4.0, gt=0)
        logit_standardization: StrictBool = False

    params: Params

    def spot_loss(self, k: int, student: Tensor, teacher: Tensor, ctx: DistillContext) -> Tensor:
        """KD loss of each sample from the logits (B, K) -> (B,)."""
        return kd_per_sample(
            student, teacher, self.params.temperature, self.params.logit_standardization
        )
