"""Similarity-Preserving distillation (Tung & Mori, ICCV 2019), as in RepDistiller's ``SP.py``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
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


def similarity_preserving_loss(student: Tensor, teacher: Tensor, weights: Tensor) -> Tensor:
    """Gated SP loss of one spot: (B, ...) features, (B,) weights -> scalar.

    G = F Fᵀ over the flattened features, each row L2-normalised over the selected columns;
    loss = ‖G_t − G_s‖²_F / b² on the selected sub-batch of size b, times b / B.
    """
    batch = student.shape[0]
    dtype = compute_dtype(student)
    student = student.reshape(batch, -1).to(dtype)
    teacher = teacher.reshape(batch, -1).detach().to(dtype)
    weights = weights.detach().to(dtype)
    student_gram = _row_normalised_gram(student, weights)
    teacher_gram = _row_normalised_gram(teacher, weights)
    squared = (teacher_gram - student_gram).pow(2)
    selected = weights.sum()
    total = (pair_weights(weights) * squared).sum()
    return relational_gate(weights) * safe_divide(total, selected * selected) * selected / batch


def _row_normalised_gram(feats: Tensor, weights: Tensor) -> Tensor:
    """(B, D) -> (B, B) Gram matrix whose rows have unit norm over the weighted columns.

    Entries outside the selected sub-batch are exactly 0, so no row is divided by a vanishing
    norm: with fewer than two selected samples a huge Gram entry (> ~1.8e7 in float32) would
    otherwise overflow to inf after the division and turn the gated 0 into 0 × inf = NaN.
    """
    selected = (weights > 0).to(feats.dtype)
    gram = (feats @ feats.t()) * pair_weights(selected)
    row_norm = torch.linalg.vector_norm(gram * weights.sqrt()[None, :], dim=1, keepdim=True)
    return gram / row_norm.clamp_min(1e-12)


@register_distiller
class SimilarityPreserving(Distiller):
    """SP: match the batch's row-normalised Gram matrices of the last stage's feature maps."""

    name = "sp"
    description = "Similarity-Preserving (Tung & Mori 2019): row-normalised batch Gram matrices"
    spot_role = "last_stage"

    class Params(DistillerParams):
        """SP has no hyperparameters besides the caller's weight beta (3000 in the paper's recipes)."""

    def forward(
        self,
        student_feats: Sequence[Tensor],
        teacher_feats: Sequence[Tensor],
        weights: Tensor,
        ctx: DistillContext,
    ) -> Tensor:
        """Sum over spots of the gated SP loss; features (B, C, H, W), ``weights`` (B, S)."""
        return sum_over_spots(
            similarity_preserving_loss, student_feats, teacher_feats, weights, self.num_spots
        )
