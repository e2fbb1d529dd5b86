"""torchvision-compatible ImageNet ResNets: parameter counts, parameter names, stages at 224."""

from __future__ import annotations

import copy

import pytest
import torch

from sakd.models import create_model

# torchvision's published parameter counts (models/resnet.py weights metadata, 1000 classes).
TORCHVISION_PARAMS = {
    "resnet18_imagenet": 11_689_512,
    "resnet34_imagenet": 21_797_672,
    "resnet50_imagenet": 25_557_032,
}
LAYOUT = {
    "resnet18_imagenet": ((2, 2, 2, 2), False),
    "resnet34_imagenet": ((3, 4, 6, 3), False),
    "resnet50_imagenet": ((3, 4, 6, 3), True),
}
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_state_keys(blocks: tuple[int, ...], bottleneck: bool) -> list[str]:
    """State-dict keys of torchvision's ResNet, written out from its module names."""
    keys = ["conv1.weight", *(f"bn1.{k}" for k in BN)]
    convs = 3 if bottleneck else 2
    for layer, count in enumerate(blocks, start=1):
        for block in range(count):
            prefix = f"layer{layer}.{block}"
            for c in range(1, convs + 1):
                keys += [f"{prefix}.conv{c}.weight", *(f"{prefix}.bn{c}.{k}" for k in BN)]
            if block == 0 and (layer > 1 or bottleneck):
                keys += [f"{prefix}.downsample.0.weight"]
                keys += [f"{prefix}.downsample.1.{k}" for k in BN]
    return [*keys, "fc.weight", "fc.bias"]


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameter_count_is_torchvisions(name):
    model = create_model(name, num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", sorted(LAYOUT))
def test_state_dict_names_are_torchvisions(name):
    keys = list(create_model(name, num_classes=1000).state_dict())
    assert sorted(keys) == sorted(torchvision_state_keys(*LAYOUT[name]))


def test_stages_at_224_follow_the_resolution_steps():
    infos = create_model("resnet18_imagenet", num_classes=1000).spot_info(224)
    assert [i.shape for i in infos] == [
        (64, 56, 56),
        (64, 56, 56),
        (128, 28, 28),
        (256, 14, 14),
        (512, 7, 7),
        (512,),
    ]
    assert [i.role for i in infos] == ["stem", "stage", "stage", "stage", "stage", "pooled"]


def test_stages_are_views_not_copies():
    model = create_model("resnet18_imagenet", num_classes=10)
    assert model.stages is model.stages and model.head is model.fc
    assert model.stages[1] is model.layer1 and model.stages[0][0] is model.conv1
    clone = copy.deepcopy(model)
    assert clone.stages[0][0] is clone.conv1 and clone.stages[4] is clone.layer4


@torch.no_grad()
def test_loads_torchvision_weights_and_agrees():
    torchvision = pytest.importorskip("torchvision")
    for name, factory in (("resnet18_imagenet", "resnet18"), ("resnet50_imagenet", "resnet50")):
        reference = getattr(torchvision.models, factory)(num_classes=10).eval()
        ours = create_model(name, num_classes=10).eval()
        ours.load_state_dict(reference.state_dict(), strict=True)
        x = torch.randn(2, 3, 64, 64)
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)
