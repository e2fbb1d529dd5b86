"""ImageNet ResNets: with the CIFAR stem (RepDistiller's ``models/resnetv2.py``) or torchvision's.

resnet18, resnet34 (BasicBlock) and resnet50 (Bottleneck). The stem is a single conv3×3-BN-ReLU
with stride 1 (no 7×7 conv, no max-pool), so a 32×32 input gives F = stem 64×32², layer1 at 32²,
layer2 16², layer3 8², layer4 4², pooled (``method.md`` §1.2, 6-feature family).

resnet18_imagenet, resnet34_imagenet, resnet50_imagenet are torchvision's definitions (7×7 stem
with max-pool, parameter names as torchvision's, so its checkpoints load) for 224×224 ImageNet.
"""

from __future__ import annotations

from torch import Tensor, nn

from sakd.models.registry import register_model
from sakd.models.resnet import BasicBlock, Bottleneck, conv3x3, init_resnet, residual_group
from sakd.models.staged import StagedNet


class ResNetCifarStem(StagedNet):
    """Four residual layers of widths 64/128/256/512 (×expansion), strides 1/2/2/2."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: tuple[int, int, int, int],
        num_classes: int = 100,
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = [nn.Sequential(conv3x3(3, 64), nn.BatchNorm2d(64), nn.ReLU())]
        in_channels = 64
        for i, (channels, count) in enumerate(zip((64, 128, 256, 512), num_blocks, strict=True)):
            stages.append(residual_group(block, in_channels, channels, count, 1 if i == 0 else 2))
            in_channels = channels * block.expansion
        stages.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(in_channels, num_classes)
        self.stage_roles = ("stem", "stage", "stage", "stage", "stage", "pooled")
        init_resnet(self)


@register_model("resnet18")
def resnet18(num_classes: int = 100) -> ResNetCifarStem:
    """ResNet-18 (BasicBlock, 2-2-2-2) with the CIFAR stem."""
    return ResNetCifarStem(BasicBlock, (2, 2, 2, 2), num_classes)


@register_model("resnet34")
def resnet34(num_classes: int = 100) -> ResNetCifarStem:
    """ResNet-34 (BasicBlock, 3-4-6-3) with the CIFAR stem."""
    return ResNetCifarStem(BasicBlock, (3, 4, 6, 3), num_classes)


@register_model("resnet50")
def resnet50(num_classes: int = 100) -> ResNetCifarStem:
    """ResNet-50 (Bottleneck, 3-4-6-3) with the CIFAR stem; RepDistiller's ``ResNet50``."""
    return ResNetCifarStem(Bottleneck, (3, 4, 6, 3), num_classes)


class TorchvisionBasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: conv3×3-BN-ReLU-conv3×3-BN + shortcut, then ReLU.

    Same module names as torchvision (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``downsample``), so
    its checkpoints load strictly. (B, C_in, H, W) -> (B, C, H/stride, W/stride), post-ReLU.
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = _downsample(in_channels, channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class TorchvisionBottleneck(nn.Module):
    """torchvision's ``Bottleneck`` (ResNet v1.5: the stride on the 3×3 conv), names as there."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, channels * 4, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """torchvision's shortcut projection (1×1 conv + BN) where width or resolution changes."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class ResNetImageNet(StagedNet):
    """torchvision's ResNet (ImageNet stem: conv7×7 stride 2, BN, ReLU, max-pool 3×3 stride 2).

    The parameters carry torchvision's names (``conv1``, ``bn1``, ``layer1``…``layer4``, ``fc``),
    so ``torchvision.models.resnet18(weights=...).state_dict()`` loads strictly and the logits
    agree. The stages are views over those modules (not registered twice): stem (conv1-bn1-relu-
    maxpool, 1/4 resolution), layer1 (1/4), layer2 (1/8), layer3 (1/16), layer4 (1/32), pooled.
    Stage outputs are post-ReLU (torchvision's blocks end in their ReLU), so no pre-activation
    spot is exposed.
    """

    def __init__(
        self,
        block: type[TorchvisionBasicBlock] | type[TorchvisionBottleneck],
        num_blocks: tuple[int, int, int, int],
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = 64
        for i, (channels, count) in enumerate(zip((64, 128, 256, 512), num_blocks, strict=True)):
            blocks = []
            for k in range(count):
                stride = 2 if i > 0 and k == 0 else 1
                blocks.append(block(in_channels, channels, stride))
                in_channels = channels * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        self.stage_roles = ("stem", "stage", "stage", "stage", "stage", "pooled")
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def stages(self) -> nn.ModuleList:  # type: ignore[override]
        """The six stages, a ModuleList over the registered modules, kept outside ``_modules``."""
        view = self.__dict__.get("_stage_view")
        if view is None:
            view = nn.ModuleList(
                [
                    nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool),
                    self.layer1,
                    self.layer2,
                    self.layer3,
                    self.layer4,
                    nn.Sequential(self.avgpool, nn.Flatten()),
                ]
            )
            self.__dict__["_stage_view"] = view
        return view

    @property
    def head(self) -> nn.Linear:  # type: ignore[override]
        """The classifier, torchvision's ``fc``."""
        return self.fc


@register_model("resnet18_imagenet")
def resnet18_imagenet(num_classes: int = 1000) -> ResNetImageNet:
    """torchvision's ResNet-18 (BasicBlock, 2-2-2-2, ImageNet stem): 11.69 M parameters at 1000 classes."""
    return ResNetImageNet(TorchvisionBasicBlock, (2, 2, 2, 2), num_classes)


@register_model("resnet34_imagenet")
def resnet34_imagenet(num_classes: int = 1000) -> ResNetImageNet:
    """torchvision's ResNet-34 (BasicBlock, 3-4-6-3, ImageNet stem): 21.80 M parameters at 1000 classes."""
    return ResNetImageNet(TorchvisionBasicBlock, (3, 4, 6, 3), num_classes)


@register_model("resnet50_imagenet")
def resnet50_imagenet(num_classes: int = 1000) -> ResNetImageNet:
    """torchvision's ResNet-50 (Bottleneck v1.5, 3-4-6-3, ImageNet stem): 25.56 M parameters."""
    return ResNetImageNet(TorchvisionBottleneck, (3, 4, 6, 3), num_classes)
