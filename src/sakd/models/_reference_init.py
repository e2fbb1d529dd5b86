"""The weight init RepDistiller's VGG, MobileNetV2 and WRN share (ResNets: ``init_resnet``)."""

from __future__ import annotations

import math

from torch import nn


def reference_init(model: nn.Module, linear_std: float | None) -> None:
    """Conv N(0, 2/(k²·C_out)) with zero bias, BN weight 1 and bias 0, Linear bias 0.

    Linear weights are drawn from N(0, linear_std²) unless ``linear_std`` is None (WRN keeps
    PyTorch's default there). Modules are visited in ``model.modules()`` order.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(module.weight, 0.0, linear_std)
            nn.init.zeros_(module.bias)
