"""CIFAR ShuffleNetV1 (groups 3, widths 240/480/960) as in RepDistiller's ``ShuffleNetv1.py``.

Stages (``method.md`` §1.2): stem conv1×1-BN-ReLU (24 channels, stride 1), three groups of
bottlenecks (4/8/4 blocks, each group starting with a stride-2 block that concatenates an
average-pooled shortcut), average pool. Each group ends in ``nn.ReLU()``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sakd.models.registry import register_model
from sakd.models.staged import StagedNet

STEM_CHANNELS = 24


def pointwise_stem() -> nn.Sequential:
    """The ShuffleNet stem (V1 and V2): conv1×1 3 -> 24 channels, stride 1, then BN and ReLU."""
    return nn.Sequential(
        nn.Conv2d(3, STEM_CHANNELS, 1, bias=False), nn.BatchNorm2d(STEM_CHANNELS), nn.ReLU()
    )


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave channel groups: (B, g·k, H, W) viewed as (B, g, k, H, W) -> transposed -> flat."""
    batch, channels, height, width = x.shape
    x = x.reshape(batch, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


class ShuffleBottleneck(nn.Module):
    """Grouped 1×1-BN-ReLU, shuffle, depthwise 3×3-BN, grouped 1×1-BN; + or concat shortcut.

    Stride 1 adds the input; stride 2 concatenates a 3×3 average-pooled input, so the output has
    ``out_channels + in_channels`` channels. Returns the value before the final ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        super().__init__()
        mid_channels = out_channels // 4
        first_groups = 1 if in_channels == STEM_CHANNELS else groups
        self.stride = stride
        self.first_groups = first_groups
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(
            mid_channels, mid_channels, 3, stride, padding=1, groups=mid_channels, bias=False
        )
        self.bn2 = nn.BatchNorm2d(mid_channels)
        self.conv3 = nn.Conv2d(mid_channels, out_channels, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else None

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out (+C_in if stride 2), H/stride, W/stride), pre-ReLU."""
        out = channel_shuffle(self.relu(self.bn1(self.conv1(x))), self.first_groups)
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is None:
            return out + x
        return torch.cat([out, self.shortcut(x)], dim=1)


class ShuffleNetV1(StagedNet):
    """ShuffleNetV1 for 32×32 inputs; ``widths`` and ``num_blocks`` per group, ``groups`` for convs."""

    def __init__(
        self,
        widths: tuple[int, int, int] = (240, 480, 960),
        num_blocks: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
        num_classes: int = 100,
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = [pointwise_stem()]
        in_channels = STEM_CHANNELS
        for width, count in zip(widths, num_blocks, strict=True):
            layers: list[nn.Module] = []
            for i in range(count):
                stride = 2 if i == 0 else 1
                branch_channels = width - in_channels if i == 0 else width
                layers += [
                    ShuffleBottleneck(in_channels, branch_channels, stride, groups),
                    nn.ReLU(),
                ]
                in_channels = width
            stages.append(nn.Sequential(*layers))
        stages.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(widths[-1], num_classes)
        self.stage_roles = ("stem", "stage", "stage", "stage", "pooled")


@register_model("shufflev1")
def shufflev1(num_classes: int = 100) -> ShuffleNetV1:
    """ShuffleNetV1, groups 3, widths 240/480/960, blocks 4/8/4 (RepDistiller's ``ShuffleV1``)."""
    return ShuffleNetV1(num_classes=num_classes)
