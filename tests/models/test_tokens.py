"""Token-map spots: layouts, the spatial view of tokens, and vision transformers staged by blocks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sakd.models.staged import SpotInfo
from sakd.models.tokens import (
    TokenLayout,
    block_stages,
    map_to_tokens,
    token_layout,
    tokens_to_map,
    transformer_blocks,
)
from sakd.models.wrap import stage_model

from ._tiny_vit import TinyViT


def test_token_layout_from_the_prefix_count_or_inferred():
    assert token_layout((17, 8), 1) == TokenLayout(1, (4, 4))
    assert token_layout((16, 8), 0) == TokenLayout(0, (4, 4))
    assert token_layout((66, 8), 2) == TokenLayout(2, (8, 8))  # class + distillation token
    assert token_layout((17, 8), None) == TokenLayout(1, (4, 4))  # the largest square fits
    assert token_layout((18, 8), 1) is None  # 17 patch tokens make no square grid
    assert token_layout((8, 4, 4), 1) is None and token_layout((8,), None) is None
    assert TokenLayout(1, (4, 4)).num_tokens == 17


def test_tokens_and_maps_are_the_same_row_major_grid():
    layout = TokenLayout(1, (2, 3))
    x = torch.arange(2 * 7 * 4, dtype=torch.float32).reshape(2, 7, 4)
    spatial = tokens_to_map(x, layout)
    assert spatial.shape == (2, 4, 2, 3)
    for i in range(2):
        for j in range(3):
            assert torch.equal(spatial[:, :, i, j], x[:, 1 + 3 * i + j])
    assert torch.equal(map_to_tokens(spatial), x[:, 1:])


@pytest.mark.parametrize(
    ("depth", "picked"), [(4, [0, 1, 2, 3]), (8, [1, 3, 5, 7]), (6, [0, 2, 3, 5]), (2, [0, 1])]
)
def test_default_spots_are_blocks_at_quarters_of_the_depth(depth, picked):
    net = TinyViT(depth=depth)
    assert transformer_blocks(net) == [f"blocks.{i}" for i in range(depth)]
    assert block_stages(net) == [f"blocks.{i}" for i in picked]


def test_a_cnn_has_no_transformer_blocks():
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU())
    assert transformer_blocks(cnn) == [] and block_stages(cnn) == []


def test_a_vit_is_staged_at_its_blocks_with_token_spots():
    torch.manual_seed(0)
    net = TinyViT(dim=16, depth=8, patch=4, size=16)
    staged = stage_model(net, input_size=16)
    assert staged.stage_paths == ("blocks.1", "blocks.3", "blocks.5", "blocks.7")
    assert staged.stage_roles == ("stage",) * 4 + ("pooled",)
    infos = staged.spot_info()
    for info in infos[:-1]:
        assert info.shape == (17, 16) and info.is_tokens and not info.is_map
        assert info.tokens == TokenLayout(1, (4, 4))
        assert info.channels == 16 and info.reduction == 4  # the patch size
    assert infos[-1].shape == (16,) and not infos[-1].is_tokens
    assert [i.name for i in infos] == [*staged.stage_paths, "pooled"]
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        feats, logits = staged.eval().forward_features(x)
        torch.testing.assert_close(logits, net.eval()(x))
    assert feats[0].shape == (3, 17, 16)


def test_optional_forward_inputs_are_fixed_at_their_defaults():
    class WithMask(TinyViT):
        def forward(self, x, attn_mask=None, is_causal=False):
            assert attn_mask is None and not is_causal
            return super().forward(x)

    torch.manual_seed(0)
    net = WithMask()
    staged = stage_model(net, input_size=16)  # timm's ViT forward has (x, attn_mask, is_causal)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(staged.eval()(x), net.eval()(x))


def test_spot_info_of_a_map_is_unchanged():
    info = SpotInfo(index=1, role="stage", channels=8, reduction=2, shape=(8, 4, 4))
    assert info.tokens is None and not info.is_tokens and info.is_map


def test_a_hierarchical_transformer_is_not_cut_at_blocks():
    # Swin-like: one block sequence per resolution; the stages hold the attention only indirectly.
    class Stage(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.Sequential(TinyViT().blocks[0], TinyViT().blocks[0])

    net = nn.Module()
    net.layers = nn.Sequential(Stage(), Stage())
    assert transformer_blocks(net) == []
