"""CIFAR ResNets as in RepDistiller's ``models/resnet.py``: resnet8 … resnet110, resnet8x4, resnet32x4.

Stages (``method.md`` §1.2): stem conv3×3-BN-ReLU, three residual groups (strides 1, 2, 2), pooled
vector. Each group ends in ``nn.ReLU()``, so its pre-activation output is available.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from sakd.models.registry import register_model
from sakd.models.staged import StagedNet


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution, padding 1, no bias."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Shortcut that changes width or resolution: 1×1 conv (stride ``stride``) + BN."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """conv3×3-BN-ReLU-conv3×3-BN plus shortcut; the final ReLU is left to the caller.

    (B, C_in, H, W) -> (B, C, H/stride, W/stride), pre-activation.
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        out_channels = channels * self.expansion
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = projection(in_channels, out_channels, stride) if needs_projection else None

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C, H/stride, W/stride) before the block's final ReLU."""
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return out + (x if self.shortcut is None else self.shortcut(x))


class Bottleneck(nn.Module):
    """conv1×1-BN-ReLU-conv3×3-BN-ReLU-conv1×1-BN (4× expansion) plus shortcut, before the final ReLU.

    (B, C_in, H, W) -> (B, 4·C, H/stride, W/stride), pre-activation.
    """

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = projection(in_channels, out_channels, stride) if needs_projection else None

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, 4·C, H/stride, W/stride) before the block's final ReLU."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + (x if self.shortcut is None else self.shortcut(x))


def residual_group(
    block: type[BasicBlock] | type[Bottleneck],
    in_channels: int,
    channels: int,
    num_blocks: int,
    stride: int,
) -> nn.Sequential:
    """``num_blocks`` blocks, each followed by ``nn.ReLU()``; only the first block has ``stride``."""
    layers: list[nn.Module] = []
    for i in range(num_blocks):
        layers += [block(in_channels, channels, stride if i == 0 else 1), nn.ReLU()]
        in_channels = channels * block.expansion
    return nn.Sequential(*layers)


def init_resnet(model: nn.Module) -> None:
    """RepDistiller's ResNet init: Kaiming-normal (fan-out) convs, BN weight 1 and bias 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class CifarResNet(StagedNet):
    """CIFAR ResNet of depth 6n+2 with BasicBlocks; ``widths`` = (stem, group1, group2, group3)."""

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 100):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        stem, c1, c2, c3 = widths
        self.stages = nn.ModuleList(
            [
                nn.Sequential(conv3x3(3, stem), nn.BatchNorm2d(stem), nn.ReLU()),
                residual_group(BasicBlock, stem, c1, n, stride=1),
                residual_group(BasicBlock, c1, c2, n, stride=2),
                residual_group(BasicBlock, c2, c3, n, stride=2),
                nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
            ]
        )
        self.head = nn.Linear(c3, num_classes)
        self.stage_roles = ("stem", "stage", "stage", "stage", "pooled")
        init_resnet(self)


CIFAR_RESNETS: dict[str, tuple[int, tuple[int, int, int, int]]] = {
    "resnet8": (8, (16, 16, 32, 64)),
    "resnet14": (14, (16, 16, 32, 64)),
    "resnet20": (20, (16, 16, 32, 64)),
    "resnet32": (32, (16, 16, 32, 64)),
    "resnet44": (44, (16, 16, 32, 64)),
    "resnet56": (56, (16, 16, 32, 64)),
    "resnet110": (110, (16, 16, 32, 64)),
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}


def _factory(depth: int, widths: tuple[int, int, int, int]) -> Callable[..., CifarResNet]:
    def build(num_classes: int = 100) -> CifarResNet:
        return CifarResNet(depth, widths, num_classes)

    build.__doc__ = f"CIFAR ResNet-{depth}, widths {widths} (RepDistiller)."
    return build


for _name, (_depth, _widths) in CIFAR_RESNETS.items():
    register_model(_name)(_factory(_depth, _widths))
