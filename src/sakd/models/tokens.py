"""Token maps: the spot features of vision transformers, (B, N, C) with N = prefix + h·w tokens.

A transformer block outputs ``prefix`` tokens (the class token, DeiT's distillation token, timm's
register tokens) followed by the h×w patch tokens in row-major order. :class:`TokenLayout`
describes that layout for a spot (:attr:`sakd.models.SpotInfo.tokens`); :func:`tokens_to_map`
gives the patch tokens' spatial view (B, C, h, w), which is what AT, the adaptors and the CNN ↔
ViT bridges work on. :func:`block_stages` finds a transformer's blocks and picks the default
spots (the outputs of the blocks at depth/4, depth/2, 3·depth/4 and depth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn


@dataclass(frozen=True)
class TokenLayout:
    """``prefix`` leading tokens (class / distillation / register), then an ``grid`` of patch tokens."""

    prefix: int
    grid: tuple[int, int]

    @property
    def num_tokens(self) -> int:
        """N = prefix + h·w."""
        return self.prefix + self.grid[0] * self.grid[1]


def token_layout(shape: tuple[int, ...], prefix: int | None) -> TokenLayout | None:
    """The layout of an (N, C) feature with ``prefix`` leading tokens (None: inferred), or None.

    Without a known ``prefix`` the grid is the largest square that fits N (the rest are prefix
    tokens); a known ``prefix`` whose remainder is not a square gives None (no spatial layout).
    """
    if len(shape) != 2:
        return None
    count = shape[0]
    if prefix is None:
        side = math.isqrt(count)
        return TokenLayout(count - side * side, (side, side)) if side else None
    side = math.isqrt(max(count - prefix, 0))
    if side == 0 or side * side != count - prefix:
        return None
    return TokenLayout(prefix, (side, side))


def split_tokens(x: Tensor, layout: TokenLayout) -> tuple[Tensor, Tensor]:
    """(B, N, C) -> prefix tokens (B, P, C) and patch tokens (B, h·w, C)."""
    return x[:, : layout.prefix], x[:, layout.prefix :]


def tokens_to_map(x: Tensor, layout: TokenLayout) -> Tensor:
    """The patch tokens of (B, N, C) as a contiguous map (B, C, h, w); prefix tokens left out.

    Contiguous (NCHW), as a CNN's own maps are: a channels-last view would make the next
    convolution pick other kernels and round differently.
    """
    patches = x[:, layout.prefix :]
    return patches.transpose(1, 2).reshape(x.shape[0], x.shape[2], *layout.grid).contiguous()


def map_to_tokens(x: Tensor) -> Tensor:
    """A map (B, C, h, w) as row-major patch tokens (B, h·w, C)."""
    return x.flatten(2).transpose(1, 2)


def num_prefix_tokens(module: nn.Module) -> int | None:
    """How many tokens precede the patch tokens in ``module``'s blocks, when the module says so.

    timm's vision transformers carry ``num_prefix_tokens``; torchvision's ``VisionTransformer``
    has one ``class_token``. Other modules: None (the layout is inferred from N).
    """
    count = getattr(module, "num_prefix_tokens", None)
    if isinstance(count, int):
        return count
    if isinstance(getattr(module, "class_token", None), nn.Parameter):
        return 1
    return None


def transformer_blocks(module: nn.Module) -> list[str]:
    """Paths of ``module``'s transformer blocks in order, or [] when it has none.

    The blocks are the children of an ``nn.Sequential`` whose children (two or more) all have one
    class with an attention module as a direct child, and which holds every attention module of
    ``module`` (a class named ``*Attention*``, such as timm's ``Attention`` or
    ``nn.MultiheadAttention``): ``blocks.N`` in timm's ViT /
    DeiT, ``encoder.layers.encoder_layer_N`` in torchvision's ``vit_b_16`` family. Hierarchical
    transformers (Swin: one block sequence per resolution) have none and are cut like CNNs.
    """
    attention = {id(m) for m in module.modules() if _is_attention(m)}
    if not attention:
        return []
    for path, seq in module.named_modules():
        if not isinstance(seq, nn.Sequential) or len(seq) < 2:
            continue
        children = list(seq.named_children())
        if len({type(child) for _, child in children}) != 1:
            continue
        if not any(_is_attention(m) for m in children[0][1].children()):
            continue  # a sequence of stages (Swin's layers), not of blocks
        if {id(m) for m in seq.modules() if _is_attention(m)} == attention:
            return [f"{path}.{name}" if path else name for name, _ in children]
    return []


def _is_attention(module: nn.Module) -> bool:
    return "Attention" in type(module).__name__


def block_stages(module: nn.Module) -> list[str]:
    """The default spots of a transformer: its blocks at depth/4, depth/2, 3·depth/4 and depth.

    Counted from 1 (block ⌊k·depth/4⌋ for k = 1..4, at least block 1, each once); [] when the
    module has no transformer blocks (:func:`transformer_blocks`).
    """
    blocks = transformer_blocks(module)
    depth = len(blocks)
    picked = sorted({max(1, k * depth // 4) for k in range(1, 5)}) if depth else []
    return [blocks[i - 1] for i in picked]
