"""CIFAR ShuffleNetV2 (net size 1: widths 116/232/464, 1024) as in RepDistiller's ``ShuffleNetv2.py``.

Stages: stem conv1×1-BN-ReLU (24 channels, stride 1), three groups (a stride-2 down block followed by
3/7/3 split blocks), then conv1×1-BN-ReLU to 1024 channels + average pool. Group outputs are channel
shuffles of concatenations, not ReLU outputs, so ``preact=True`` returns the same features.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sakd.models.registry import register_model
from sakd.models.shufflenetv1 import STEM_CHANNELS, channel_shuffle, pointwise_stem
from sakd.models.staged import StagedNet


class SplitBlock(nn.Module):
    """Keep half the channels, run the other half through 1×1-BN-ReLU, dw3×3-BN, 1×1-BN-ReLU, concat, shuffle.

    (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        half = x.shape[1] // 2
        kept, branch = x[:, :half], x[:, half:]
        branch = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(branch)))))
        branch = self.relu(self.bn3(self.conv3(branch)))
        return channel_shuffle(torch.cat([kept, branch], dim=1), 2)


class DownBlock(nn.Module):
    """Two stride-2 branches (dw3×3-BN, 1×1-BN-ReLU | 1×1-BN-ReLU, dw3×3-BN, 1×1-BN-ReLU), concat, shuffle.

    (B, C_in, H, W) -> (B, C_out, H/2, W/2).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 2, 1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H/2, W/2)."""
        left = self.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(self.relu(self.bn3(self.conv3(x)))))
        right = self.relu(self.bn5(self.conv5(right)))
        return channel_shuffle(torch.cat([left, right], dim=1), 2)


class ShuffleNetV2(StagedNet):
    """ShuffleNetV2 for 32×32 inputs: ``widths`` = three group widths + the final 1×1 conv width."""

    def __init__(
        self,
        widths: tuple[int, int, int, int] = (116, 232, 464, 1024),
        num_blocks: tuple[int, int, int] = (3, 7, 3),
        num_classes: int = 100,
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = [pointwise_stem()]
        in_channels = STEM_CHANNELS
        for width, count in zip(widths[:3], num_blocks, strict=True):
            blocks = [DownBlock(in_channels, width), *(SplitBlock(width) for _ in range(count))]
            stages.append(nn.Sequential(*blocks))
            in_channels = width
        stages.append(
            nn.Sequential(
                nn.Conv2d(in_channels, widths[3], 1, bias=False),
                nn.BatchNorm2d(widths[3]),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
        )
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(widths[3], num_classes)
        self.stage_roles = ("stem", "stage", "stage", "stage", "pooled")


@register_model("shufflev2")
def shufflev2(num_classes: int = 100) -> ShuffleNetV2:
    """ShuffleNetV2 net size 1 (RepDistiller's ``ShuffleV2``)."""
    return ShuffleNetV2(num_classes=num_classes)
