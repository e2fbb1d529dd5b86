"""Adaptors between token maps, and bridges between feature maps and token maps (CNN ↔ ViT).

Used where a spot on either side is a token map (:attr:`~sakd.models.SpotInfo.tokens`): SAKD's
routing adaptors and FitNet's regressor. Map ↔ map pairs keep :class:`~sakd.models.connectors.ConvReg`.

* **Same token layout** (prefix count and grid): one ``nn.Linear`` on every token, the class token
  included (:class:`TokenLinear`).
* **Otherwise** (:class:`TokenBridge`) the patch tokens are seen as a map (B, C, h, w) and moved to
  the other grid by a *linear* resampler (:func:`grid_resampler`): when one grid is an integer
  multiple k of the other, a k×k convolution with stride k (an *unfold*: each k×k block of the
  finer grid becomes one token, exactly a ViT patch embedding) or its transpose (a *fold*: each
  token becomes a k×k block); otherwise area pooling / bilinear resizing to the grid, then a 1×1
  convolution. The prefix tokens of a token target come from the source's prefix tokens through a
  ``nn.Linear`` when both have the same number, else from the source's spatial mean (a map has no
  class token; its global average is what a CNN's classifier reads). A map target drops the
  source's prefix tokens and ends with BatchNorm + ReLU like ``ConvReg`` (CNN stages emit
  post-activation maps); a token target ends with no activation (the residual stream is signed).

Why unfold / fold rather than pooling: pooling a 32×32 CNN map to an 8×8 token grid averages away
everything inside each 4×4 block, and an adaptor in the routed network must *carry* the features
to the other network's next segment. The strided convolution keeps every position (it is a
learned linear map of the whole block, like the patch embedding the ViT itself starts with) at the
cost of one small layer; the transposed one gives each token its own k×k block back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sakd.models.connectors import make_connector
from sakd.models.staged import SpotInfo
from sakd.models.tokens import map_to_tokens, split_tokens, tokens_to_map


class _Resize(nn.Module):
    """Area pooling (shrinking) or bilinear interpolation (growing) of a map to ``size``."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, *size)."""
        if x.shape[2] >= self.size[0] and x.shape[3] >= self.size[1]:
            return F.adaptive_avg_pool2d(x, self.size)
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)


def grid_resampler(
    c_in: int, c_out: int, size_in: tuple[int, int], size_out: tuple[int, int]
) -> nn.Module:
    """A linear map (B, c_in, *size_in) -> (B, c_out, *size_out); see the module docstring."""
    (h_in, w_in), (h_out, w_out) = size_in, size_out
    if (h_in, w_in) == (h_out, w_out):
        return nn.Conv2d(c_in, c_out, 1)
    if h_in % h_out == 0 and w_in % w_out == 0 and h_in // h_out == w_in // w_out:
        k = h_in // h_out
        return nn.Conv2d(c_in, c_out, k, stride=k)
    if h_out % h_in == 0 and w_out % w_in == 0 and h_out // h_in == w_out // w_in:
        k = h_out // h_in
        return nn.ConvTranspose2d(c_in, c_out, k, stride=k)
    return nn.Sequential(_Resize(size_out), nn.Conv2d(c_in, c_out, 1))


class TokenLinear(nn.Module):
    """One ``nn.Linear`` applied to every token: (B, N, C_in) -> (B, N, C_out)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(c_in, c_out)

    def forward(self, x: Tensor) -> Tensor:
        """Tokens in, tokens out (same N)."""
        return self.linear(x)


class TokenBridge(nn.Module):
    """Map one spot's feature onto another's shape when either is a token map (module docstring)."""

    def __init__(self, source: SpotInfo, target: SpotInfo) -> None:
        super().__init__()
        self.source_layout = source.tokens
        self.target_layout = target.tokens
        c_in, c_out = source.channels, target.channels
        size_in = source.tokens.grid if source.tokens is not None else source.shape[1:]
        size_out = target.tokens.grid if target.tokens is not None else target.shape[1:]
        self.resample = grid_resampler(c_in, c_out, tuple(size_in), tuple(size_out))
        target_prefix = target.tokens.prefix if target.tokens is not None else 0
        self.prefix = nn.Linear(c_in, c_out) if target_prefix else None
        self.same_prefix = source.tokens is not None and source.tokens.prefix == target_prefix
        if target.tokens is None:
            self.post: nn.Module = nn.Sequential(nn.BatchNorm2d(c_out), nn.ReLU())
        else:
            self.post = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """The source feature (B, N, C) or (B, C, H, W) in the target's shape."""
        prefix, spatial = None, x
        if self.source_layout is not None:
            prefix, _ = split_tokens(x, self.source_layout)
            spatial = tokens_to_map(x, self.source_layout)
        out = self.post(self.resample(spatial))
        if self.target_layout is None:
            return out
        tokens = map_to_tokens(out)
        if self.prefix is None:
            return tokens
        if prefix is None or not self.same_prefix:
            summary = spatial.mean(dim=(2, 3))[:, None, :]
            prefix = summary.expand(-1, self.target_layout.prefix, -1)
        return torch.cat([self.prefix(prefix), tokens], dim=1)


def make_spot_adaptor(source: SpotInfo, target: SpotInfo) -> nn.Module:
    """The adaptor from ``source``'s feature to ``target``'s shape.

    Token maps of the same layout: :class:`TokenLinear`; a token map on either side otherwise:
    :class:`TokenBridge`; maps and pooled vectors: :func:`~sakd.models.connectors.make_connector`.
    """
    if source.is_tokens and target.is_tokens and source.tokens == target.tokens:
        return TokenLinear(source.channels, target.channels)
    if source.is_tokens or target.is_tokens:
        if len(source.shape) == 1 or len(target.shape) == 1:
            raise ValueError(f"cannot connect a feature of shape {source.shape} to {target.shape}")
        return TokenBridge(source, target)
    return make_connector(source.shape, target.shape)
