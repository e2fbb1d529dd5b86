"""Probabilistic Knowledge Transfer (Passalis & Tefas, ECCV 2018), as in RepDistiller's ``PKT.py``."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from pydantic import Field
from torch import Tensor

from sakd.losses._relational import (
    compute_dtype,
    pair_weights,
    relational_gate,
    safe_divide,
    sum_over_spots,
)
from sakd.losses.base import DistillContext, Distiller, DistillerParams
from sakd.losses.registry import register_distiller


def probabilistic_transfer_loss(
    student: Tensor, teacher: Tensor, weights: Tensor, eps: float = 1e-7
) -> Tensor:
    """Gated PKT loss of one spot: (B, D) features, (B,) weights -> scalar.

    Cosine similarities mapped to [0, 1] and normalised per row over the selected samples into
    conditional probabilities; loss = mean over the b² selected pairs of
    P_t log((P_t + eps) / (P_s + eps)), times b / B.
    """
    batch = student.shape[0]
    dtype = compute_dtype(student)
    weights = weights.detach().to(dtype)
    student_probs = _conditional_probabilities(student.reshape(batch, -1).to(dtype), weights, eps)
    teacher_probs = _conditional_probabilities(
        teacher.reshape(batch, -1).detach().to(dtype), weights, eps
    )
    divergence = teacher_probs * torch.log((teacher_probs + eps) / (student_probs + eps))
    selected = weights.sum()
    total = (pair_weights(weights) * divergence).sum()
    return relational_gate(weights) * safe_divide(total, selected * selected) * selected / batch


def _conditional_probabilities(feats: Tensor, weights: Tensor, eps: float) -> Tensor:
    """(B, D) -> (B, B): (cos + 1) / 2 divided by its row sum over the weighted columns."""
    unit = feats / (torch.linalg.vector_norm(feats, dim=1, keepdim=True) + eps)
    similarity = (unit @ unit.t() + 1.0) / 2.0
    row_sum = (similarity * weights[None, :]).sum(1, keepdim=True)
    return safe_divide(similarity, row_sum)


@register_distiller
class ProbabilisticKnowledgeTransfer(Distiller):
    """PKT: match the batch's cosine-similarity distributions of the pooled features (KL)."""

    name = "pkt"
    description = (
        "Probabilistic Knowledge Transfer (Passalis & Tefas 2018): KL of similarity distributions"
    )
    spot_role = "pooled"

    class Params(DistillerParams):
        """PKT's published constant (RepDistiller ``cosine_similarity_loss``)."""

        eps: float = Field(default=1e-7, gt=0, description="added to norms and probabilities")

    def forward(
        self,
        student_feats: Sequence[Tensor],
        teacher_feats: Sequence[Tensor],
        weights: Tensor,
        ctx: DistillContext,
    ) -> Tensor:
        """Sum over spots of the gated PKT loss; features (B, D), ``weights`` (B, S)."""
        spot_loss = partial(probabilistic_transfer_loss, eps=self.params.eps)
        return sum_over_spots(spot_loss, student_feats, teacher_feats, weights, self.num_spots)
