"""stage_model turns a user's nn.Module into a StagedNet that shares its parameters."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from sakd.errors import SakdError
from sakd.models import StagedNet, resolve_spots
from sakd.models.wrap import stage_model


class Block(nn.Module):
    """A torchvision-style basic block: conv-BN-ReLU-conv-BN + (projected) identity, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class MiniResNet(nn.Module):
    """A tiny torchvision-like ResNet: 7×7 stem + max-pool, layer1..layer4, avgpool, flatten, fc."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(Block(8, 8, 1), Block(8, 8, 1))
        self.layer2 = nn.Sequential(Block(8, 16, 2))
        self.layer3 = nn.Sequential(Block(16, 24, 2))
        self.layer4 = nn.Sequential(Block(24, 32, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class LongSkip(nn.Module):
    """A network whose output adds a projection of the stem output: not a chain after ``layer1``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1 = nn.Conv2d(8, 8, 3, padding=1)
        self.layer2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: Tensor) -> Tensor:
        stem = self.stem(x)
        out = self.layer2(self.layer1(stem)) + stem
        return self.fc(out.mean(dim=(2, 3)))


class SharedTwice(nn.Module):
    """Calls the same block twice."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.block(self.block(x)).mean(dim=(2, 3)))


LAYERS = ["layer1", "layer2", "layer3", "layer4"]


def mini_resnet() -> MiniResNet:
    torch.manual_seed(0)
    model = MiniResNet().eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.running_mean, -0.5, 0.5)
            nn.init.uniform_(module.running_var, 0.5, 1.5)
    return model


def image(size: int = 64) -> Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))


@torch.no_grad()
def test_staged_forward_equals_the_original_and_runs_compose() -> None:
    model = mini_resnet()
    staged = stage_model(model, LAYERS, "fc", stem="maxpool", input_size=64)
    x = image()
    logits = model(x)
    assert isinstance(staged, StagedNet)
    torch.testing.assert_close(staged(x), logits, rtol=0, atol=0)
    feats, feature_logits = staged.forward_features(x)
    torch.testing.assert_close(feature_logits, logits, rtol=0, atol=0)
    for k in range(staged.num_stages + 2):
        torch.testing.assert_close(staged.run(staged.run(x, 0, k), k, None), logits)
    torch.testing.assert_close(feats[-1], torch.flatten(model.avgpool(feats[-2]), 1))


@torch.no_grad()
def test_features_are_the_outputs_of_the_named_modules() -> None:
    model = mini_resnet()
    captured: dict[str, Tensor] = {}
    for path in ["maxpool", *LAYERS]:
        model.get_submodule(path).register_forward_hook(
            lambda _m, _i, out, path=path: captured.__setitem__(path, out.clone())
        )
    staged = stage_model(model, LAYERS, "fc", stem="maxpool", input_size=64)
    feats, _ = staged.forward_features(image())
    for path, feat in zip(["maxpool", *LAYERS], feats, strict=False):
        torch.testing.assert_close(feat, captured[path], rtol=0, atol=0)


def test_roles_and_spot_info() -> None:
    staged = stage_model(mini_resnet(), LAYERS, "fc", stem="maxpool", input_size=64)
    assert staged.stage_roles == ("stem", "stage", "stage", "stage", "stage", "pooled")
    infos = staged.spot_info()
    assert [i.shape for i in infos] == [
        (8, 16, 16),
        (8, 16, 16),
        (16, 8, 8),
        (24, 4, 4),
        (32, 2, 2),
        (32,),
    ]
    assert [i.reduction for i in infos[:-1]] == [4, 4, 8, 16, 32]
    assert [i.shape for i in staged.spot_info(32)][-2] == (32, 1, 1)
    assert [s.index for s in resolve_spots(infos, "stages")] == [1, 2, 3, 4]

    without_stem = stage_model(mini_resnet(), LAYERS, "fc")
    assert without_stem.stage_roles == ("stage", "stage", "stage", "stage", "pooled")
    assert without_stem.input_size == 224
    assert without_stem.spot_info()[0].shape == (8, 56, 56)


def test_parameters_are_the_original_modules() -> None:
    model = mini_resnet()
    staged = stage_model(model, LAYERS, "fc", stem="maxpool")
    assert staged.head is model.fc
    assert {id(p) for p in staged.parameters()} == {id(p) for p in model.parameters()}
    assert sum(p.numel() for p in staged.parameters()) == sum(p.numel() for p in model.parameters())


@torch.no_grad()
def test_loading_a_state_dict_into_the_original_updates_the_staged_net() -> None:
    model = mini_resnet()
    staged = stage_model(model, LAYERS, "fc", stem="maxpool")
    torch.manual_seed(7)
    other = MiniResNet().eval()
    model.load_state_dict(other.state_dict())
    x = image()
    torch.testing.assert_close(staged(x), other(x), rtol=0, atol=0)


def test_training_the_staged_net_trains_the_original() -> None:
    model = mini_resnet().train()
    staged = stage_model(model, LAYERS, "fc", stem="maxpool")
    before = model.layer3[0].conv1.weight.detach().clone()
    optimizer = torch.optim.SGD(staged.parameters(), lr=0.1)
    staged(image()).logsumexp(dim=1).sum().backward()
    optimizer.step()
    assert not torch.equal(model.layer3[0].conv1.weight, before)


@pytest.mark.fault("user-code")
def test_unknown_module_path_is_named() -> None:
    with pytest.raises(SakdError, match="'layer9'"):
        stage_model(mini_resnet(), ["layer1", "layer9"], "fc")
    with pytest.raises(SakdError, match="'head'"):
        stage_model(mini_resnet(), LAYERS, "head")


@pytest.mark.fault("user-code")
def test_skip_connection_across_a_cut_is_refused_naming_the_cut() -> None:
    with pytest.raises(SakdError, match="cannot cut the model at 'layer1'"):
        stage_model(LongSkip(), ["layer1", "layer2"], "fc", stem="stem")


def test_a_cut_after_the_skip_is_accepted() -> None:
    model = LongSkip().eval()
    staged = stage_model(model, ["stem"], "fc")
    x = image(16)
    torch.testing.assert_close(staged(x), model(x), rtol=0, atol=0)


@pytest.mark.fault("user-code")
def test_module_called_twice_is_refused() -> None:
    with pytest.raises(SakdError, match="'block' is called 2 times"):
        stage_model(SharedTwice(), ["block"], "fc")


@pytest.mark.fault("user-code")
def test_out_of_order_paths_are_refused() -> None:
    with pytest.raises(SakdError, match="out of order"):
        stage_model(mini_resnet(), ["layer2", "layer1"], "fc")


@pytest.mark.fault("user-code")
def test_nested_and_repeated_paths_are_refused() -> None:
    with pytest.raises(SakdError, match="'layer1.0' is never called"):
        stage_model(mini_resnet(), ["layer1", "layer1.0"], "fc")
    with pytest.raises(SakdError, match="named twice"):
        stage_model(mini_resnet(), ["layer1", "layer1"], "fc")


def test_untraceable_model_is_reported() -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Conv2d(3, 3, 1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x: Tensor) -> Tensor:
            if x.sum() > 0:
                x = self.layer(x)
            return self.fc(x.mean(dim=(2, 3)))

    with pytest.raises(SakdError, match="cannot trace DataDependent"):
        stage_model(DataDependent(), ["layer"], "fc")


def test_head_must_give_the_model_output() -> None:
    class Scaled(MiniResNet):
        def forward(self, x: Tensor) -> Tensor:
            return super().forward(x) * 2

    with pytest.raises(SakdError, match="head 'fc' must take the pooled feature"):
        stage_model(Scaled(), LAYERS, "fc")


def test_at_least_one_stage_path_is_required() -> None:
    with pytest.raises(SakdError, match="at least one stage path"):
        stage_model(mini_resnet(), [], "fc", stem="maxpool")
