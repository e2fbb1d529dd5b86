"""Token adaptors and CNN ↔ ViT bridges: linear on tokens, unfold / fold between grids."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sakd.models.connectors import ConvReg
from sakd.models.staged import SpotInfo
from sakd.models.token_adaptors import TokenBridge, TokenLinear, make_spot_adaptor
from sakd.models.tokens import TokenLayout


def tokens(count_prefix: int, side: int, dim: int) -> SpotInfo:
    layout = TokenLayout(count_prefix, (side, side))
    return SpotInfo(1, "stage", dim, 16 // side, (layout.num_tokens, dim), "blocks.1", layout)


def feature_map(channels: int, side: int) -> SpotInfo:
    return SpotInfo(1, "stage", channels, 16 // side, (channels, side, side), "layer1")


def test_same_layout_is_one_linear_on_every_token():
    adaptor = make_spot_adaptor(tokens(1, 4, 8), tokens(1, 4, 12))
    assert isinstance(adaptor, TokenLinear)
    x = torch.randn(3, 17, 8)
    out = adaptor(x)
    assert out.shape == (3, 17, 12)
    torch.testing.assert_close(out, x @ adaptor.linear.weight.T + adaptor.linear.bias)


def test_maps_keep_convreg():
    assert isinstance(make_spot_adaptor(feature_map(8, 8), feature_map(16, 4)), ConvReg)


def test_a_finer_map_is_unfolded_onto_the_token_grid():
    torch.manual_seed(0)
    bridge = make_spot_adaptor(feature_map(6, 8), tokens(1, 4, 10))
    assert isinstance(bridge, TokenBridge)
    x = torch.randn(2, 6, 8, 8)
    out = bridge(x)
    assert out.shape == (2, 17, 10)
    # Each token is a linear map of its 2×2 block of the map (a patch embedding).
    conv = bridge.resample
    blocks = F.unfold(x, 2, stride=2).transpose(1, 2)  # (B, 16, 6·2·2)
    expected = blocks @ conv.weight.reshape(10, -1).T + conv.bias
    torch.testing.assert_close(out[:, 1:], expected)
    # The class token comes from the map's spatial mean.
    torch.testing.assert_close(out[:, 0], bridge.prefix(x.mean(dim=(2, 3))))


def test_tokens_are_folded_back_onto_a_finer_map_with_bn_relu():
    torch.manual_seed(0)
    bridge = make_spot_adaptor(tokens(1, 4, 10), feature_map(6, 8))
    x = torch.randn(2, 17, 10)
    out = bridge(x)
    assert out.shape == (2, 6, 8, 8) and (out >= 0).all()
    assert isinstance(bridge.resample, nn.ConvTranspose2d) and bridge.prefix is None
    # The class token does not reach the map: changing it changes nothing.
    changed = x.clone()
    changed[:, 0] += 5
    torch.testing.assert_close(bridge(changed), out)


def test_tokens_between_grids_keep_the_class_token_through_its_own_linear():
    torch.manual_seed(0)
    bridge = make_spot_adaptor(tokens(1, 8, 8), tokens(1, 4, 12))
    x = torch.randn(2, 65, 8)
    out = bridge(x)
    assert out.shape == (2, 17, 12)
    torch.testing.assert_close(out[:, :1], bridge.prefix(x[:, :1]))


@pytest.mark.parametrize(("source", "target"), [((8, 6), (4, 4)), ((4, 3), (4, 5))])
def test_grids_without_an_integer_ratio_are_resized(source, target):
    bridge = make_spot_adaptor(tokens(0, source[1], source[0]), tokens(2, target[1], target[0]))
    out = bridge(torch.randn(2, source[1] ** 2, source[0]))
    assert out.shape == (2, 2 + target[1] ** 2, target[0])


def test_a_pooled_vector_is_not_bridged_to_tokens():
    vector = SpotInfo(4, "pooled", 8, 0, (8,), "pooled")
    with pytest.raises(ValueError, match="cannot connect"):
        make_spot_adaptor(vector, tokens(1, 4, 8))
