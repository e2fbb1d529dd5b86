"""CIFAR VGGs with BatchNorm as in RepDistiller's ``models/vgg.py``: vgg8, vgg11, vgg13, vgg16, vgg19.

Five conv blocks, no FC layers besides the classifier. Stages (``method.md`` §1.2): block0, then
max-pool + block1..block3, then (max-pool only when the map is at least 8×8) + block4, then an
adaptive average pool. Every block stage ends in ``nn.ReLU()``. The conditional pool makes F[4]
4×4 for both 32×32 (CIFAR) and 64×64 (Tiny-ImageNet) inputs, as in the SAKD authors' code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from sakd.models._reference_init import reference_init
from sakd.models.registry import register_model
from sakd.models.staged import StagedNet

VGG_CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": (
        (64, 64),
        (128, 128),
        (256, 256, 256, 256),
        (512, 512, 512, 512),
        (512, 512, 512, 512),
    ),
}


class MaxPoolIfLarge(nn.Module):
    """2×2 max-pool applied only when the map is at least ``min_size`` high; else identity."""

    def __init__(self, min_size: int = 8) -> None:
        super().__init__()
        self.min_size = min_size

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H/2, W/2) if H >= min_size, else unchanged."""
        return F.max_pool2d(x, 2, 2) if x.shape[2] >= self.min_size else x


def _block(in_channels: int, widths: tuple[int, ...]) -> list[nn.Module]:
    """conv3×3-BN-ReLU per width; the last ReLU is a separate, non-inplace ``nn.ReLU()``."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width)]
        layers.append(nn.ReLU(inplace=True))
        in_channels = width
    layers[-1] = nn.ReLU()
    return layers


class VGG(StagedNet):
    """VGG with BN for 32×32 inputs; ``config`` gives the conv widths of the five blocks."""

    def __init__(self, config: tuple[tuple[int, ...], ...], num_classes: int = 100) -> None:
        super().__init__()
        in_channels = [3] + [widths[-1] for widths in config[:-1]]
        pools: list[nn.Module] = [nn.MaxPool2d(2, 2) for _ in range(3)] + [MaxPoolIfLarge(8)]
        stages: list[nn.Module] = [nn.Sequential(*_block(3, config[0]))]
        for pool, c_in, widths in zip(pools, in_channels[1:], config[1:], strict=True):
            stages.append(nn.Sequential(pool, *_block(c_in, widths)))
        stages.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(config[-1][-1], num_classes)
        self.stage_roles = ("stem", "stage", "stage", "stage", "stage", "pooled")
        reference_init(self, linear_std=0.01)


def _factory(name: str, config: tuple[tuple[int, ...], ...]) -> Callable[..., VGG]:
    def build(num_classes: int = 100) -> VGG:
        return VGG(config, num_classes)

    build.__doc__ = f"{name} with BatchNorm (RepDistiller's {name}_bn)."
    return build


for _name, _config in VGG_CONFIGS.items():
    register_model(_name)(_factory(_name, _config))
