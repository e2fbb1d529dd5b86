"""Helpers shared by the per-sample distillers: gating by weights, spatial matching, shape checks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sakd.errors import SakdError
from sakd.models.staged import SpotInfo


def gated_batch_mean(per_sample: Tensor, weight: Tensor) -> Tensor:
    """Σ_i w_i·ℓ_i / B for per-sample losses ℓ (B,) and weights w (B,); exactly 0 when w is 0.

    With a 0/1 weight this is the batch mean over the selected samples times |selected| / B.
    Half-precision losses (autocast) are summed in float32.
    """
    dtype = torch.promote_types(per_sample.dtype, torch.float32)
    return (per_sample.to(dtype) * weight.to(dtype)).sum() / per_sample.shape[0]


def check_weights(weights: Tensor, batch_size: int, num_spots: int) -> None:
    """Raise ValueError unless ``weights`` is (batch_size, num_spots)."""
    if weights.shape != (batch_size, num_spots):
        raise ValueError(
            f"weights must have shape ({batch_size}, {num_spots}) (batch, spots), "
            f"got {tuple(weights.shape)}"
        )


def zero_loss(like: Tensor) -> Tensor:
    """A scalar 0 on the device of ``like`` (float32 or wider) that depends on no tensor."""
    return torch.zeros((), device=like.device, dtype=torch.promote_types(like.dtype, torch.float32))


def match_spatial(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pool the larger of two (B, C, H, W) maps to the smaller's H and W.

    RepDistiller pools the map with the larger height to the other's size (AT, NST, VID, FT).
    """
    height = min(student.shape[2], teacher.shape[2])
    width = min(student.shape[3], teacher.shape[3])
    if student.shape[2:] != (height, width):
        student = F.adaptive_avg_pool2d(student, (height, width))
    if teacher.shape[2:] != (height, width):
        teacher = F.adaptive_avg_pool2d(teacher, (height, width))
    return student, teacher


def require_maps(distiller: str, spots: Sequence[SpotInfo], tokens_ok: bool = False) -> None:
    """Raise :class:`SakdError` unless every spot is a (C, H, W) map (or a token map: ``tokens_ok``)."""
    for spot in spots:
        if spot.is_tokens and not tokens_ok:
            from sakd.losses.tokens import token_refusal

            raise SakdError(token_refusal(distiller, spot))
        if not spot.is_map and not (tokens_ok and spot.is_tokens):
            raise SakdError(
                f"{distiller} needs feature maps but spot F[{spot.index}] has shape {spot.shape}: "
                "use a model whose stages output (C, H, W) maps"
            )
