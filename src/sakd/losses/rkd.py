"""Relational Knowledge Distillation (Park et al., CVPR 2019), as in RepDistiller's ``RKD.py``."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
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


def relational_loss(
    student: Tensor,
    teacher: Tensor,
    weights: Tensor,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
) -> Tensor:
    """Gated RKD loss of one spot: (B, D) features, (B,) weights -> scalar.

    Distance term: pairwise distances divided by their mean over the selected distinct pairs,
    smooth-L1 averaged over the b² selected pairs. Angle term: cosines of the angles at every
    selected anchor, smooth-L1 averaged over the b³ selected triplets. Times b / B.
    """
    batch = student.shape[0]
    dtype = compute_dtype(student)
    student = student.reshape(batch, -1).to(dtype)
    teacher = teacher.reshape(batch, -1).detach().to(dtype)
    weights = weights.detach().to(dtype)
    pairs = pair_weights(weights)
    selected = weights.sum()

    distinct = pairs * (1.0 - torch.eye(batch, device=weights.device, dtype=dtype))
    student_dist = _normalised_distances(student, distinct)
    teacher_dist = _normalised_distances(teacher, distinct)
    distance_terms = F.smooth_l1_loss(student_dist, teacher_dist, reduction="none")
    distance_loss = safe_divide((pairs * distance_terms).sum(), selected.pow(2))

    triplets = weights[:, None, None] * pairs[None, :, :]
    angle_terms = F.smooth_l1_loss(_angles(student), _angles(teacher), reduction="none")
    angle_loss = safe_divide((triplets * angle_terms).sum(), selected.pow(3))

    loss = distance_weight * distance_loss + angle_weight * angle_loss
    return relational_gate(weights) * loss * selected / batch


def _normalised_distances(feats: Tensor, distinct_pairs: Tensor) -> Tensor:
    """(B, D) -> (B, B) Euclidean distances (zero diagonal) over their weighted mean off-diagonal."""
    squared_norms = feats.pow(2).sum(1)
    squared = squared_norms[:, None] + squared_norms[None, :] - 2.0 * (feats @ feats.t())
    off_diagonal = 1.0 - torch.eye(feats.shape[0], device=feats.device, dtype=feats.dtype)
    distances = squared.clamp_min(1e-12).sqrt() * off_diagonal
    mean = safe_divide((distinct_pairs * distances).sum(), distinct_pairs.sum())
    return safe_divide(distances, mean)


def _angles(feats: Tensor) -> Tensor:
    """(B, D) -> (B, B, B): entry [i, j, k] is cos of the angle between e_j − e_i and e_k − e_i."""
    directions = F.normalize(feats[None, :, :] - feats[:, None, :], p=2, dim=2)
    return directions @ directions.transpose(1, 2)


@register_distiller
class RelationalKD(Distiller):
    """RKD: match distance- and angle-wise relations among the batch's pooled features."""

    name = "rkd"
    description = (
        "Relational KD (Park et al. 2019): pairwise distances and triplet angles, smooth-L1"
    )
    spot_role = "pooled"

    class Params(DistillerParams):
        """Weights of RKD's two terms (RepDistiller ``w_d``, ``w_a``)."""

        distance_weight: float = Field(
            default=25.0, ge=0, description="weight of the distance term"
        )
        angle_weight: float = Field(default=50.0, ge=0, description="weight of the angle term")

    def forward(
        self,
        student_feats: Sequence[Tensor],
        teacher_feats: Sequence[Tensor],
        weights: Tensor,
        ctx: DistillContext,
    ) -> Tensor:
        """Sum over spots of the gated RKD loss; features (B, D), ``weights`` (B, S)."""
        spot_loss = partial(
            relational_loss,
            distance_weight=self.params.distance_weight,
            angle_weight=self.params.angle_weight,
        )
        return sum_over_spots(spot_loss, student_feats, teacher_feats, weights, self.num_spots)
