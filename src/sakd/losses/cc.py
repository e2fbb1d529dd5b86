"""Correlation Congruence (Peng et al., ICCV 2019), as in RepDistiller's ``CC.py`` (``Correlation``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pydantic import Field
from torch import Tensor, nn

from sakd.losses._relational import check_spot_inputs, compute_dtype, full_precision, safe_divide
from sakd.losses.base import DistillContext, Distiller, DistillerParams, DistillerSetup
from sakd.losses.registry import register_distiller


def correlation_congruence_loss(
    student_embedded: Tensor, teacher_embedded: Tensor, weights: Tensor
) -> Tensor:
    """Gated CC loss of one spot: (B, D) embeddings, (B,) weights -> scalar.

    With Δ = |e_s − e_t|, the loss is the mean over consecutive pairs (i, next(i)) of the selected
    samples in batch order of Σ_d Δ_i·Δ_next(i), times b / B. ``next(i)`` is the next sample after
    ``i`` with a nonzero weight; a soft pair counts with weight w_i·w_next(i).
    """
    batch = student_embedded.shape[0]
    dtype = compute_dtype(student_embedded)
    weights = weights.detach().to(dtype)
    delta = (student_embedded.to(dtype) - teacher_embedded.to(dtype)).abs()
    following, has_following = _next_selected(weights)
    products = (delta * delta[following]).sum(1)
    pair_weight = torch.where(has_following, weights * weights[following], 0.0)
    mean = safe_divide((pair_weight * products).sum(), pair_weight.sum())
    return mean * weights.sum() / batch


def _next_selected(weights: Tensor) -> tuple[Tensor, Tensor]:
    """(B,) weights -> for each i, the next j > i with w_j > 0 (clamped), and whether it pairs.

    "Pairs" means i itself is selected and such a j exists. Static shapes, no host sync.
    """
    batch = weights.shape[0]
    positions = torch.arange(batch, device=weights.device)
    candidates = torch.where(weights > 0, positions, torch.full_like(positions, batch))
    first_from = candidates.flip(0).cummin(0).values.flip(0)
    first_after = torch.cat([first_from[1:], first_from.new_full((1,), batch)])
    has_following = (weights > 0) & (first_after < batch)
    return first_after.clamp_max(batch - 1), has_following


class LinearEmbed(nn.Module):
    """Flatten and project linearly, no normalisation: (B, ...) -> (B, out_dim)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, ...) -> (B, out_dim)."""
        return self.linear(x.reshape(x.shape[0], -1))


@register_distiller
class CorrelationCongruence(Distiller):
    """CC: pooled features of both nets embedded linearly; consecutive-pair correlation of the gap."""

    name = "cc"
    description = (
        "Correlation Congruence (Peng et al. 2019): linear embeddings, consecutive-pair correlation"
    )
    spot_role = "pooled"

    class Params(DistillerParams):
        """CC's embedding size and whether the teacher's embedding is trained."""

        feat_dim: int = Field(default=128, ge=1, description="size of both linear embeddings")
        train_teacher_embed: bool = Field(
            default=True,
            description=(
                "train the teacher-side embedding with the student (RepDistiller and the SAKD "
                "authors' baseline and random ablation); false keeps it at its random init, as the "
                "authors' train.py does (the paper recipes' presets cc@adaptive and cc@anti)"
            ),
        )

    def __init__(self, setup: DistillerSetup) -> None:
        super().__init__(setup)
        feat_dim = self.params.feat_dim
        self.student_embeds = nn.ModuleList(
            LinearEmbed(math.prod(spot.shape), feat_dim) for spot in self.student_spots
        )
        self.teacher_embeds = nn.ModuleList(
            LinearEmbed(math.prod(spot.shape), feat_dim) for spot in self.teacher_spots
        )
        if not self.params.train_teacher_embed:
            self.teacher_embeds.requires_grad_(False)

    def forward(
        self,
        student_feats: Sequence[Tensor],
        teacher_feats: Sequence[Tensor],
        weights: Tensor,
        ctx: DistillContext,
    ) -> Tensor:
        """Sum over spots of the gated CC loss; features (B, D), ``weights`` (B, S)."""
        check_spot_inputs(student_feats, teacher_feats, weights, self.num_spots)
        terms = []
        for student, teacher, weight, student_embed, teacher_embed in zip(
            student_feats,
            teacher_feats,
            weights.unbind(1),
            self.student_embeds,
            self.teacher_embeds,
            strict=True,
        ):
            dtype = student_embed.linear.weight.dtype
            with full_precision(weight.device):
                teacher_embedded = teacher_embed(teacher.detach().to(dtype))
                student_embedded = student_embed(student.to(dtype))
                terms.append(
                    correlation_congruence_loss(student_embedded, teacher_embedded, weight)
                )
        return torch.stack(terms).sum()
