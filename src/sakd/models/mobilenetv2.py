"""CIFAR MobileNetV2 (expansion T=6) as in RepDistiller's / the SAKD authors' ``mobilenetv2.py``.

Two widths are registered:

- ``mobilenetv2_half``: width 0.5, RepDistiller's ``mobile_half``, which its tables (and the T/S rows
  the SAKD authors copied) call "MobileNetV2".
- ``mobilenetv2``: width 1.0, the SAKD authors' ``mobilev2`` (their "MobileNetV2").

Stages (``method.md`` §1.2): conv1 (stride 2), blocks 0–1, block 2, blocks 3–4, blocks 5–6, then
conv2 (1×1 to 1280) + average pool. Block stages end in a linear bottleneck (no ReLU).
"""

from __future__ import annotations

from torch import Tensor, nn

from sakd.models._reference_init import reference_init
from sakd.models.registry import register_model
from sakd.models.staged import StagedNet

# expansion t (None = the model's T), output channels c, repeats n, first stride s
INVERTED_RESIDUAL_SETTING: tuple[tuple[int | None, int, int, int], ...] = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
# which settings (block indices) make up each stage after conv1
STAGE_BLOCKS: tuple[tuple[int, ...], ...] = ((0, 1), (2,), (3, 4), (5, 6))
LAST_CHANNELS = 1280


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class InvertedResidual(nn.Module):
    """1×1 expand-BN-ReLU, 3×3 depthwise-BN-ReLU, 1×1 project-BN; residual when shapes match.

    The expand conv is present even for expansion 1, as in the reference code.
    (B, C_in, H, W) -> (B, C_out, H/stride, W/stride).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(StagedNet):
    """MobileNetV2 for 32×32 inputs (stride-1 second block group) with expansion ``expansion``."""

    def __init__(self, width: float, expansion: int = 6, num_classes: int = 100) -> None:
        super().__init__()
        in_channels = int(32 * width)
        stem = _conv_bn_relu(3, in_channels, 3, stride=2)
        groups: list[list[nn.Module]] = []
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            out_channels = int(c * width)
            blocks: list[nn.Module] = []
            for i in range(n):
                blocks.append(
                    InvertedResidual(in_channels, out_channels, s if i == 0 else 1, t or expansion)
                )
                in_channels = out_channels
            groups.append(blocks)
        last_channels = int(LAST_CHANNELS * width) if width > 1.0 else LAST_CHANNELS
        stages: list[nn.Module] = [stem]
        for indices in STAGE_BLOCKS:
            stages.append(nn.Sequential(*(block for i in indices for block in groups[i])))
        stages.append(
            nn.Sequential(
                *_conv_bn_relu(in_channels, last_channels, 1, stride=1),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
        )
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(last_channels, num_classes)
        self.stage_roles = ("stem", "stage", "stage", "stage", "stage", "pooled")
        reference_init(self, linear_std=0.01)


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int = 100) -> MobileNetV2:
    """MobileNetV2 width 1.0, T=6: the SAKD authors' "MobileNetV2" (``mobilev2``)."""
    return MobileNetV2(1.0, 6, num_classes)


@register_model("mobilenetv2_half")
def mobilenetv2_half(num_classes: int = 100) -> MobileNetV2:
    """MobileNetV2 width 0.5, T=6: RepDistiller's "MobileNetV2" (``mobile_half``)."""
    return MobileNetV2(0.5, 6, num_classes)
