"""ImageNet-shaped ResNets with the CIFAR stem, as RepDistiller's ``models/resnetv2.py``.

resnet18, resnet34 (BasicBlock) and resnet50 (Bottleneck). The stem is a single conv3×3-BN-ReLU
with stride 1 (no 7×7 conv, no max-pool), so a 32×32 input gives F = stem 64×32², layer1 at 32²,
layer2 16², layer3 8², layer4 4², pooled (``method.md`` §1.2, 6-feature family).
"""

from __future__ import annotations

from torch import nn

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
