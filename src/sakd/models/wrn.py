"""Wide ResNets as in RepDistiller's ``models/wrn.py``: wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2.

Stages (``method.md`` §1.2): stem = the first conv3×3 alone, three groups of pre-activation blocks,
and a pooled stage BN-ReLU-avgpool. F[3] is therefore the group-3 output *before* the final BN-ReLU.
No stage ends in a ReLU, so ``preact=True`` returns the same features.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from sakd.models._reference_init import reference_init
from sakd.models.registry import register_model
from sakd.models.staged import StagedNet


class WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3×3-BN-ReLU-conv3×3 plus shortcut.

    When the width changes, the shortcut is a 1×1 conv applied to the BN-ReLU output (as in the
    reference code); otherwise it is the raw input. (B, C_in, H, W) -> (B, C_out, H/s, W/s).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
            if in_channels != out_channels
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""
        activated = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(activated))))
        return out + (x if self.shortcut is None else self.shortcut(activated))


def _group(in_channels: int, out_channels: int, num_blocks: int, stride: int) -> nn.Sequential:
    blocks = [
        WideBlock(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1)
        for i in range(num_blocks)
    ]
    return nn.Sequential(*blocks)


class WideResNet(StagedNet):
    """WRN-depth-widen: depth 6n+4, group widths 16k/32k/64k after a 16-channel stem conv."""

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        c1, c2, c3 = 16 * widen_factor, 32 * widen_factor, 64 * widen_factor
        self.stages = nn.ModuleList(
            [
                nn.Conv2d(3, 16, 3, 1, padding=1, bias=False),
                _group(16, c1, n, stride=1),
                _group(c1, c2, n, stride=2),
                _group(c2, c3, n, stride=2),
                nn.Sequential(nn.BatchNorm2d(c3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
            ]
        )
        self.head = nn.Linear(c3, num_classes)
        self.stage_roles = ("stem", "stage", "stage", "stage", "pooled")
        reference_init(self, linear_std=None)


def _factory(depth: int, widen_factor: int) -> Callable[..., WideResNet]:
    def build(num_classes: int = 100) -> WideResNet:
        return WideResNet(depth, widen_factor, num_classes)

    build.__doc__ = f"Wide ResNet {depth}-{widen_factor} (RepDistiller)."
    return build


for _depth, _widen in ((16, 1), (16, 2), (40, 1), (40, 2)):
    register_model(f"wrn_{_depth}_{_widen}")(_factory(_depth, _widen))
