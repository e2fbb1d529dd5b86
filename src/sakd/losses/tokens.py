"""Distillation on token maps (transformer blocks): which distillers run there, and their views.

A token spot (B, N, C) is distilled through its patch tokens' spatial view (B, C, h, w)
(:func:`spatial_view`): AT's attention map is then the per-token energy (channel mean of f^p
per patch token, L2-normalised over the tokens), pooled to the coarser grid when the two grids
differ, exactly as AT pools the larger of two CNN maps; a CNN map and a ViT token map pair the same
way. FitNet regresses the student's tokens (or map) onto the teacher's with a token adaptor
(:mod:`sakd.models.token_adaptors`) and takes the MSE over every token, the class token included.
The relational distillers (RKD, PKT, CRD, CC) read the pooled vector, which for a transformer is
its own pooled token (the class token after the final norm, or the token mean); SP reads the last
block's tokens flattened, as it flattens a CNN map; the logit distillers (KD, DKD, and either with
logit standardisation) are unchanged. Every other distiller needs (C, H, W) maps and refuses a
token spot with :func:`token_refusal`.
"""

from __future__ import annotations

from torch import Tensor

from sakd.losses.registry import get_distiller, list_distillers
from sakd.models.staged import SpotInfo
from sakd.models.tokens import tokens_to_map


def spatial_view(feature: Tensor, spot: SpotInfo) -> Tensor:
    """``feature`` as a map: a token map's patch tokens as (B, C, h, w); a map as it is."""
    return tokens_to_map(feature, spot.tokens) if spot.tokens is not None else feature


def token_distillers() -> list[str]:
    """Names of the distillers that run on a pair with transformer token maps."""
    return [
        name
        for name in list_distillers()
        if not getattr(get_distiller(name), "requires_maps", False)
        or getattr(get_distiller(name), "accepts_tokens", False)
    ]


def token_refusal(distiller: str, spot: SpotInfo) -> str:
    """The one-line refusal of ``distiller`` on the token spot ``spot``, naming those that work."""
    return (
        f"{distiller} needs (C, H, W) feature maps but spot {spot.name or spot.index!r} is a "
        f"transformer token map ({'×'.join(str(d) for d in spot.shape)}): on vision transformers "
        f"use one of {', '.join(token_distillers())}"
    )
