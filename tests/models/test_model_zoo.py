"""The zoo models keep the StagedNet contract and the stage split of method.md §1.2."""

from __future__ import annotations

from functools import cache

import pytest
import torch
from torch import Tensor, nn

from sakd.errors import SakdError
from sakd.models import StagedNet, create_model, list_models

BIG_MODELS = {"resnet18", "resnet34", "resnet50", "vgg16", "vgg19", "mobilenetv2", "shufflev1"}

# method.md §1.2, CIFAR input 32×32: the F list (stem, stages…, pooled vector)
RESNET_SMALL_F = [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8), (64,)]
RESNET_X4_F = [(32, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (256,)]
WRN_X2_F = [(16, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8), (128,)]
VGG_F = [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4), (512,)]
METHOD_TABLE: dict[str, list[tuple[int, ...]]] = {
    **{name: RESNET_SMALL_F for name in ("resnet20", "resnet32", "resnet56", "resnet110")},
    "resnet8x4": RESNET_X4_F,
    "resnet32x4": RESNET_X4_F,
    "wrn_16_2": WRN_X2_F,
    "wrn_40_2": WRN_X2_F,
    "shufflev1": [(24, 32, 32), (240, 16, 16), (480, 8, 8), (960, 4, 4), (960,)],
    "vgg8": VGG_F,
    "vgg13": VGG_F,
    "resnet50": [(64, 32, 32), (256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4), (2048,)],
    "mobilenetv2": [(32, 16, 16), (24, 16, 16), (32, 8, 8), (96, 4, 4), (320, 2, 2), (1280,)],
}

# Stage indices whose output is a ReLU output (pre-activation exposed) per model family.
PREACT_STAGES = {
    "resnet": {0, 1, 2, 3},
    "resnet_cifar_stem": {0, 1, 2, 3, 4},
    "wrn": set(),
    "vgg": {0, 1, 2, 3, 4},
    "mobilenetv2": {0},
    "shufflev1": {0, 1, 2, 3},
    "shufflev2": {0},
    "resnet_imagenet": set(),  # torchvision's blocks end in their own ReLU
}


def family(name: str) -> str:
    """Family key of PREACT_STAGES for a registered model name."""
    if name in ("resnet18", "resnet34", "resnet50"):
        return "resnet_cifar_stem"
    if name.endswith("_imagenet"):
        return "resnet_imagenet"
    for prefix in ("mobilenetv2", "shufflev1", "shufflev2", "wrn", "vgg", "resnet"):
        if name.startswith(prefix):
            return prefix
    raise AssertionError(name)


@cache
def build(name: str) -> StagedNet:
    """The model in eval mode with a fixed seed (built once per test session; do not modify)."""
    torch.manual_seed(0)
    return create_model(name).eval()


def sample(name: str, size: int = 32) -> Tensor:
    """A random input batch: 2 images, 1 for the biggest models."""
    generator = torch.Generator().manual_seed(1)
    return torch.randn(1 if name in BIG_MODELS else 2, 3, size, size, generator=generator)


def test_zoo_lists_every_required_model() -> None:
    required = {
        *(f"resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)),
        *("resnet8x4", "resnet32x4", "resnet18", "resnet34", "resnet50"),
        *("wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"),
        *("vgg8", "vgg11", "vgg13", "vgg16", "vgg19"),
        *("mobilenetv2", "mobilenetv2_half", "shufflev1", "shufflev2"),
    }
    assert required <= set(list_models())


@pytest.mark.fault("config")
def test_unknown_model_raises_sakd_error() -> None:
    with pytest.raises(SakdError, match="resnet9000"):
        create_model("resnet9000")


@pytest.mark.parametrize("name", list_models())
def test_roles_and_structure(name: str) -> None:
    model = build(name)
    roles = model.stage_roles
    assert isinstance(model.stages, nn.ModuleList) and isinstance(model.head, nn.Linear)
    assert len(roles) == model.num_stages
    assert roles[0] == "stem" and roles[-1] == "pooled"
    assert set(roles[1:-1]) == {"stage"}
    assert model.head.out_features == 100


@pytest.mark.parametrize("name", list_models())
@torch.no_grad()
def test_staged_runs_compose_to_the_forward(name: str) -> None:
    model, x = build(name), sample(name)
    logits = model(x)
    feats, feature_logits = model.forward_features(x)
    torch.testing.assert_close(feature_logits, logits, rtol=0, atol=0)
    assert len(feats) == model.num_stages
    chain = [x, *feats, logits]
    for k in range(model.num_stages + 1):
        torch.testing.assert_close(model.run(chain[k], k, k + 1), chain[k + 1], rtol=0, atol=0)
    # every cut point on the small models; one middle cut on the big ones (to keep the suite fast)
    cuts = [model.num_stages // 2] if name in BIG_MODELS else range(model.num_stages + 2)
    for k in cuts:
        torch.testing.assert_close(model.run(model.run(x, 0, k), k, None), logits, rtol=0, atol=0)


@pytest.mark.parametrize("name", list_models())
@torch.no_grad()
def test_preact_features(name: str) -> None:
    model, x = build(name), sample(name)
    feats, _ = model.forward_features(x)
    pre_feats, _ = model.forward_features(x, preact=True)
    with_preact = set()
    for i, (stage, feat, pre) in enumerate(zip(model.stages, feats, pre_feats, strict=True)):
        if isinstance(stage, nn.Sequential) and isinstance(stage[-1], nn.ReLU):
            with_preact.add(i)
            assert not stage[-1].inplace
            assert (pre < 0).any(), "a pre-activation map should have negative values"
            torch.testing.assert_close(torch.relu(pre), feat, rtol=0, atol=0)
        else:
            torch.testing.assert_close(pre, feat, rtol=0, atol=0)
    assert with_preact == PREACT_STAGES[family(name)]


@pytest.mark.parametrize("name", sorted(METHOD_TABLE))
def test_spot_info_matches_method_table(name: str) -> None:
    infos = build(name).spot_info(32)
    assert [info.shape for info in infos] == METHOD_TABLE[name]
    assert [info.channels for info in infos] == [shape[0] for shape in METHOD_TABLE[name]]
    assert [info.reduction for info in infos[:-1]] == [32 // s[1] for s in METHOD_TABLE[name][:-1]]


@pytest.mark.parametrize("name", sorted(METHOD_TABLE))
def test_tiny_imagenet_input_doubles_every_map_but_vgg_f4(name: str) -> None:
    expected = [
        shape
        if len(shape) == 1 or (name.startswith("vgg") and i == 4)
        else (shape[0], 2 * shape[1], 2 * shape[2])
        for i, shape in enumerate(METHOD_TABLE[name])
    ]
    assert [info.shape for info in build(name).spot_info(64)] == expected


@pytest.mark.parametrize("name", list_models())
@torch.no_grad()
def test_spot_info_matches_real_features_at_64(name: str) -> None:
    model = build(name)
    feats, logits = model.forward_features(sample(name, 64)[:1])
    assert [tuple(f.shape[1:]) for f in feats] == [info.shape for info in model.spot_info(64)]
    assert logits.shape == (1, 100)


def test_spot_info_does_not_touch_weights_or_bn_statistics() -> None:
    model = create_model("resnet8")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.spot_info(32)
    model.spot_info(64)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_vgg_pools_before_block4_only_for_large_maps() -> None:
    model = build("vgg8")
    assert model.spot_info(32)[3].shape == (512, 4, 4)
    assert model.spot_info(32)[4].shape == (512, 4, 4)
    assert model.spot_info(64)[3].shape == (512, 8, 8)
    assert model.spot_info(64)[4].shape == (512, 4, 4)


def test_train_mode_gradients_reach_every_parameter() -> None:
    model = create_model("shufflev2").train()
    model(torch.randn(2, 3, 32, 32)).logsumexp(dim=1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_activate_turns_preact_features_into_the_normal_ones():
    net = create_model("resnet8", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    post, _ = net.forward_features(x)
    pre, _ = net.forward_features(x, preact=True)
    for a, b in zip(net.activate(pre), post, strict=True):
        torch.testing.assert_close(a, b)
