"""Parameter counts of the zoo against the reference architectures and the published figures.

Each reference function below re-derives a RepDistiller model's parameter count from its published layer
configuration (``HobbitLong/RepDistiller`` ``models/*.py``; the width-1.0 MobileNetV2 from
``zju-vipa/spot-adaptive-pytorch``) without building any module, so a missing BN, a wrong group
count or a misplaced shortcut in ``sakd.models`` makes the comparison fail.
"""

from __future__ import annotations

import pytest

from sakd.models import create_model, list_models


def conv(c_in: int, c_out: int, kernel: int, groups: int = 1, bias: bool = False) -> int:
    """Weights (and bias) of a k×k convolution."""
    return c_out * (c_in // groups) * kernel * kernel + (c_out if bias else 0)


def bn(channels: int) -> int:
    """Affine weight and bias of a BatchNorm."""
    return 2 * channels


def linear(d_in: int, d_out: int) -> int:
    """Weight and bias of a Linear layer."""
    return d_in * d_out + d_out


def cifar_resnet(depth: int, widths: tuple[int, int, int, int], num_classes: int = 100) -> int:
    """RepDistiller ``resnet.py``: stem conv3×3-BN, 3 groups of (depth-2)/6 BasicBlocks, fc."""
    n = (depth - 2) // 6
    total = conv(3, widths[0], 3) + bn(widths[0])
    c_in = widths[0]
    for group, c in enumerate(widths[1:]):
        for i in range(n):
            stride = 2 if group > 0 and i == 0 else 1
            total += conv(c_in, c, 3) + bn(c) + conv(c, c, 3) + bn(c)
            if stride != 1 or c_in != c:
                total += conv(c_in, c, 1) + bn(c)
            c_in = c
    return total + linear(widths[3], num_classes)


def resnet_cifar_stem(bottleneck: bool, num_blocks: tuple[int, ...], num_classes: int = 100) -> int:
    """RepDistiller ``resnetv2.py``: conv3×3-BN stem, 4 layers (64..512, ×4 for Bottleneck), fc."""
    expansion = 4 if bottleneck else 1
    total = conv(3, 64, 3) + bn(64)
    c_in = 64
    for layer, (planes, count) in enumerate(zip((64, 128, 256, 512), num_blocks, strict=True)):
        for i in range(count):
            stride = 2 if layer > 0 and i == 0 else 1
            out = planes * expansion
            if bottleneck:
                total += conv(c_in, planes, 1) + bn(planes) + conv(planes, planes, 3) + bn(planes)
                total += conv(planes, out, 1) + bn(out)
            else:
                total += conv(c_in, planes, 3) + bn(planes) + conv(planes, planes, 3) + bn(planes)
            if stride != 1 or c_in != out:
                total += conv(c_in, out, 1) + bn(out)
            c_in = out
    return total + linear(c_in, num_classes)


def resnet_imagenet_stem(
    bottleneck: bool, num_blocks: tuple[int, ...], num_classes: int = 100
) -> int:
    """torchvision ``models/resnet.py``: conv7×7-BN stem, the same 4 layers, fc."""
    stem_difference = conv(3, 64, 7) - conv(3, 64, 3)
    return resnet_cifar_stem(bottleneck, num_blocks, num_classes) + stem_difference


def wide_resnet(depth: int, widen: int, num_classes: int = 100) -> int:
    """RepDistiller ``wrn.py``: conv3×3 stem, 3 groups of pre-activation blocks, BN, fc."""
    n = (depth - 4) // 6
    total = conv(3, 16, 3)
    c_in = 16
    for c in (16 * widen, 32 * widen, 64 * widen):
        for _ in range(n):
            total += bn(c_in) + conv(c_in, c, 3) + bn(c) + conv(c, c, 3)
            if c_in != c:
                total += conv(c_in, c, 1)
            c_in = c
    return total + bn(c_in) + linear(c_in, num_classes)


def vgg_bn(config: tuple[tuple[int, ...], ...], num_classes: int = 100) -> int:
    """RepDistiller ``vgg.py`` with BN: conv3×3 (with bias) + BN per width, fc 512."""
    total, c_in = 0, 3
    for widths in config:
        for width in widths:
            total += conv(c_in, width, 3, bias=True) + bn(width)
            c_in = width
    return total + linear(c_in, num_classes)


def mobilenetv2(width: float, expansion: int = 6, num_classes: int = 100) -> int:
    """RepDistiller ``mobilenetv2.py``: conv3×3 s2 stem, 17 inverted residuals, conv1×1 to 1280, fc."""
    setting = [(1, 16, 1), (expansion, 24, 2), (expansion, 32, 3), (expansion, 64, 4)]
    setting += [(expansion, 96, 3), (expansion, 160, 3), (expansion, 320, 1)]
    c_in = int(32 * width)
    total = conv(3, c_in, 3) + bn(c_in)
    for t, c, n in setting:
        c_out = int(c * width)
        for _ in range(n):
            hidden = c_in * t
            total += conv(c_in, hidden, 1) + bn(hidden)
            total += conv(hidden, hidden, 3, groups=hidden) + bn(hidden)
            total += conv(hidden, c_out, 1) + bn(c_out)
            c_in = c_out
    last = int(1280 * width) if width > 1.0 else 1280
    return total + conv(c_in, last, 1) + bn(last) + linear(last, num_classes)


def shufflenet_v1(num_classes: int = 100) -> int:
    """RepDistiller ``ShuffleNetv1.py`` (g=3, 240/480/960, 4/8/4 blocks)."""
    total = conv(3, 24, 1) + bn(24)
    c_in, groups = 24, 3
    for width, count in zip((240, 480, 960), (4, 8, 4), strict=True):
        for i in range(count):
            c_out = width - c_in if i == 0 else width
            mid = c_out // 4
            first_groups = 1 if c_in == 24 else groups
            total += conv(c_in, mid, 1, groups=first_groups) + bn(mid)
            total += conv(mid, mid, 3, groups=mid) + bn(mid)
            total += conv(mid, c_out, 1, groups=groups) + bn(c_out)
            c_in = width
    return total + linear(960, num_classes)


def shufflenet_v2(num_classes: int = 100) -> int:
    """RepDistiller ``ShuffleNetv2.py`` net size 1 (116/232/464, 3/7/3 blocks, 1024)."""
    total = conv(3, 24, 1) + bn(24)
    c_in = 24
    for c, count in zip((116, 232, 464), (3, 7, 3), strict=True):
        mid = c // 2
        total += conv(c_in, c_in, 3, groups=c_in) + bn(c_in) + conv(c_in, mid, 1) + bn(mid)
        total += conv(c_in, mid, 1) + bn(mid) + conv(mid, mid, 3, groups=mid) + bn(mid)
        total += conv(mid, mid, 1) + bn(mid)
        half = c // 2
        per_block = conv(half, half, 1) + bn(half) + conv(half, half, 3, groups=half) + bn(half)
        per_block += conv(half, half, 1) + bn(half)
        total += count * per_block
        c_in = c
    return total + conv(464, 1024, 1) + bn(1024) + linear(1024, num_classes)


VGG_CONFIGS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}

SMALL, X4 = (16, 16, 32, 64), (32, 64, 128, 256)

REFERENCE_COUNTS: dict[str, int] = {
    **{f"resnet{d}": cifar_resnet(d, SMALL) for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": cifar_resnet(8, X4),
    "resnet32x4": cifar_resnet(32, X4),
    **{f"wrn_{d}_{w}": wide_resnet(d, w) for d, w in ((16, 1), (16, 2), (40, 1), (40, 2))},
    **{name: vgg_bn(config) for name, config in VGG_CONFIGS.items()},
    "mobilenetv2": mobilenetv2(1.0),
    "mobilenetv2_half": mobilenetv2(0.5),
    "shufflev1": shufflenet_v1(),
    "shufflev2": shufflenet_v2(),
    "resnet18": resnet_cifar_stem(False, (2, 2, 2, 2)),
    "resnet34": resnet_cifar_stem(False, (3, 4, 6, 3)),
    "resnet50": resnet_cifar_stem(True, (3, 4, 6, 3)),
    "resnet18_imagenet": resnet_imagenet_stem(False, (2, 2, 2, 2)),
    "resnet34_imagenet": resnet_imagenet_stem(False, (3, 4, 6, 3)),
    "resnet50_imagenet": resnet_imagenet_stem(True, (3, 4, 6, 3)),
}

# Published counts (millions, 2 decimals) that could be traced to a source: RepDistiller's CIFAR
# ResNets as quoted in /work/shared/docs/environment.md ("1.23 M and 7.43 M, matching RepDistiller").
PUBLISHED_MILLIONS = {"resnet8x4": 1.23, "resnet32x4": 7.43}


def count_parameters(name: str) -> int:
    """Number of parameters of the zoo model ``name`` with 100 classes."""
    return sum(p.numel() for p in create_model(name, num_classes=100).parameters())


def test_every_registered_model_has_a_reference_count() -> None:
    assert sorted(REFERENCE_COUNTS) == list_models()


@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
def test_parameter_count_matches_reference_architecture(name: str) -> None:
    assert count_parameters(name) == REFERENCE_COUNTS[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED_MILLIONS))
def test_parameter_count_matches_published(name: str) -> None:
    assert round(count_parameters(name) / 1e6, 2) == PUBLISHED_MILLIONS[name]


def test_num_classes_changes_only_the_head() -> None:
    model = create_model("resnet20", num_classes=10)
    assert model.head.out_features == 10
    assert count_parameters("resnet20") - sum(p.numel() for p in model.parameters()) == 90 * 65
