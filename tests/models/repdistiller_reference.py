"""RepDistiller's CIFAR models as state-dict layouts and a functional forward, written for the tests.

Read from HobbitLong/RepDistiller ``models/*.py`` (resnet.py, resnetv2.py, wrn.py, vgg.py,
mobilenetv2.py, ShuffleNetv1.py, ShuffleNetv2.py; mdistiller's ``mdistiller/models/cifar/`` uses the
same module names) and re-expressed here independently of sakd's zoo: :func:`layout` lists every
state-dict key RepDistiller's module of a ``model_dict`` name has, with its shape, in the module's
own order; :func:`forward` computes that module's eval-mode logits from such a state dict with
``torch.nn.functional`` alone. Nothing here imports sakd.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Shapes = dict[str, tuple[int, ...]]
NUM_CLASSES = 100


class _Keys:
    """Collects (key, shape) in module order, the way ``state_dict()`` would list them."""

    def __init__(self) -> None:
        self.shapes: Shapes = {}

    def conv(self, name: str, c_in: int, c_out: int, k: int, groups: int = 1, bias=False) -> None:
        self.shapes[f"{name}.weight"] = (c_out, c_in // groups, k, k)
        if bias:
            self.shapes[f"{name}.bias"] = (c_out,)

    def bn(self, name: str, c: int) -> None:
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            self.shapes[f"{name}.{leaf}"] = (c,)
        self.shapes[f"{name}.num_batches_tracked"] = ()

    def linear(self, name: str, c_in: int, c_out: int) -> None:
        self.shapes[f"{name}.weight"] = (c_out, c_in)
        self.shapes[f"{name}.bias"] = (c_out,)


# ---- resnet.py: ResNet(depth, num_filters), BasicBlock, downsample = Sequential(conv1×1, BN)
CIFAR_RESNETS = {
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


def _cifar_resnet_layout(depth: int, widths: tuple[int, ...]) -> Shapes:
    keys = _Keys()
    keys.conv("conv1", 3, widths[0], 3)
    keys.bn("bn1", widths[0])
    c_in = widths[0]
    for group, planes in enumerate(widths[1:], start=1):
        for i in range((depth - 2) // 6):
            stride = 2 if group > 1 and i == 0 else 1
            block = f"layer{group}.{i}"
            keys.conv(f"{block}.conv1", c_in, planes, 3)
            keys.bn(f"{block}.bn1", planes)
            keys.conv(f"{block}.conv2", planes, planes, 3)
            keys.bn(f"{block}.bn2", planes)
            if stride != 1 or c_in != planes:
                keys.conv(f"{block}.downsample.0", c_in, planes, 1)
                keys.bn(f"{block}.downsample.1", planes)
            c_in = planes
    keys.linear("fc", widths[3], NUM_CLASSES)
    return keys.shapes


def _cifar_resnet_forward(sd: dict[str, Tensor], x: Tensor, depth: int) -> Tensor:
    x = F.relu(_bn(sd, "bn1", _conv(sd, "conv1", x)))
    for group in (1, 2, 3):
        for i in range((depth - 2) // 6):
            stride = 2 if group > 1 and i == 0 else 1
            block = f"layer{group}.{i}"
            out = F.relu(_bn(sd, f"{block}.bn1", _conv(sd, f"{block}.conv1", x, stride)))
            out = _bn(sd, f"{block}.bn2", _conv(sd, f"{block}.conv2", out))
            if f"{block}.downsample.0.weight" in sd:
                x = _bn(sd, f"{block}.downsample.1", _conv(sd, f"{block}.downsample.0", x, stride))
            x = F.relu(out + x)
    x = F.avg_pool2d(x, 8).flatten(1)  # AvgPool2d(8) on the 8×8 map
    return F.linear(x, sd["fc.weight"], sd["fc.bias"])


# ---- resnetv2.py: ResNet(block, num_blocks), widths 64/128/256/512, shortcut, linear
RESNET_V2 = {"ResNet18": ("basic", (2, 2, 2, 2)), "ResNet50": ("bottleneck", (3, 4, 6, 3))}


def _resnet_v2_layout(kind: str, counts: tuple[int, ...]) -> Shapes:
    keys = _Keys()
    keys.conv("conv1", 3, 64, 3)
    keys.bn("bn1", 64)
    expansion = 4 if kind == "bottleneck" else 1
    c_in = 64
    for group, (planes, count) in enumerate(zip((64, 128, 256, 512), counts, strict=True), start=1):
        for i in range(count):
            stride = 2 if group > 1 and i == 0 else 1
            block = f"layer{group}.{i}"
            if kind == "bottleneck":
                keys.conv(f"{block}.conv1", c_in, planes, 1)
                keys.bn(f"{block}.bn1", planes)
                keys.conv(f"{block}.conv2", planes, planes, 3)
                keys.bn(f"{block}.bn2", planes)
                keys.conv(f"{block}.conv3", planes, planes * 4, 1)
                keys.bn(f"{block}.bn3", planes * 4)
            else:
                keys.conv(f"{block}.conv1", c_in, planes, 3)
                keys.bn(f"{block}.bn1", planes)
                keys.conv(f"{block}.conv2", planes, planes, 3)
                keys.bn(f"{block}.bn2", planes)
            if stride != 1 or c_in != planes * expansion:
                keys.conv(f"{block}.shortcut.0", c_in, planes * expansion, 1)
                keys.bn(f"{block}.shortcut.1", planes * expansion)
            c_in = planes * expansion
    keys.linear("linear", c_in, NUM_CLASSES)
    return keys.shapes


def _resnet_v2_forward(sd: dict[str, Tensor], x: Tensor, counts: tuple[int, ...]) -> Tensor:
    x = F.relu(_bn(sd, "bn1", _conv(sd, "conv1", x)))
    for group, count in enumerate(counts, start=1):
        for i in range(count):
            stride = 2 if group > 1 and i == 0 else 1
            block = f"layer{group}.{i}"
            if f"{block}.conv3.weight" in sd:  # Bottleneck: the stride sits on the 3×3 conv2
                out = F.relu(_bn(sd, f"{block}.bn1", _conv(sd, f"{block}.conv1", x)))
                out = F.relu(_bn(sd, f"{block}.bn2", _conv(sd, f"{block}.conv2", out, stride)))
                out = _bn(sd, f"{block}.bn3", _conv(sd, f"{block}.conv3", out))
            else:
                out = F.relu(_bn(sd, f"{block}.bn1", _conv(sd, f"{block}.conv1", x, stride)))
                out = _bn(sd, f"{block}.bn2", _conv(sd, f"{block}.conv2", out))
            if f"{block}.shortcut.0.weight" in sd:
                x = _bn(sd, f"{block}.shortcut.1", _conv(sd, f"{block}.shortcut.0", x, stride))
            x = F.relu(out + x)
    x = F.adaptive_avg_pool2d(x, 1).flatten(1)
    return F.linear(x, sd["linear.weight"], sd["linear.bias"])


# ---- wrn.py: WideResNet(depth, widen_factor), pre-activation BasicBlock, convShortcut
WRNS = {"wrn_16_1": (16, 1), "wrn_16_2": (16, 2), "wrn_40_1": (40, 1), "wrn_40_2": (40, 2)}


def _wrn_layout(depth: int, k: int) -> Shapes:
    keys = _Keys()
    keys.conv("conv1", 3, 16, 3)
    c_in = 16
    for group, width in enumerate((16 * k, 32 * k, 64 * k), start=1):
        for i in range((depth - 4) // 6):
            block = f"block{group}.layer.{i}"
            keys.bn(f"{block}.bn1", c_in)
            keys.conv(f"{block}.conv1", c_in, width, 3)
            keys.bn(f"{block}.bn2", width)
            keys.conv(f"{block}.conv2", width, width, 3)
            if c_in != width:
                keys.conv(f"{block}.convShortcut", c_in, width, 1)
            c_in = width
    keys.bn("bn1", 64 * k)
    keys.linear("fc", 64 * k, NUM_CLASSES)
    return keys.shapes


def _wrn_forward(sd: dict[str, Tensor], x: Tensor, depth: int) -> Tensor:
    x = _conv(sd, "conv1", x)
    for group in (1, 2, 3):
        for i in range((depth - 4) // 6):
            stride = 2 if group > 1 and i == 0 else 1
            block = f"block{group}.layer.{i}"
            activated = F.relu(_bn(sd, f"{block}.bn1", x))
            out = F.relu(_bn(sd, f"{block}.bn2", _conv(sd, f"{block}.conv1", activated, stride)))
            out = _conv(sd, f"{block}.conv2", out)
            if f"{block}.convShortcut.weight" in sd:  # not equalInOut: shortcut of the activation
                x = _conv(sd, f"{block}.convShortcut", activated, stride)
            x = x + out
    x = F.relu(_bn(sd, "bn1", x))
    x = F.avg_pool2d(x, 8).flatten(1)
    return F.linear(x, sd["fc.weight"], sd["fc.bias"])


# ---- vgg.py: VGG(cfg, batch_norm=True): block0-4 of conv3×3(bias)-BN-ReLU, classifier
VGGS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


def _vgg_layout(config: tuple[tuple[int, ...], ...]) -> Shapes:
    keys = _Keys()
    c_in = 3
    for b, widths in enumerate(config):
        for j, width in enumerate(widths):  # Sequential indices: conv 3j, BN 3j+1, ReLU 3j+2
            keys.conv(f"block{b}.{3 * j}", c_in, width, 3, bias=True)
            keys.bn(f"block{b}.{3 * j + 1}", width)
            c_in = width
    keys.linear("classifier", 512, NUM_CLASSES)
    return keys.shapes


def _vgg_forward(sd: dict[str, Tensor], x: Tensor, config) -> Tensor:
    height = x.shape[2]
    for b, widths in enumerate(config):
        if b in (1, 2, 3) or (b == 4 and height == 64):  # pool0-2; pool3 only for 64×64 inputs
            x = F.max_pool2d(x, 2, 2)
        for j in range(len(widths)):
            x = F.relu(_bn(sd, f"block{b}.{3 * j + 1}", _conv(sd, f"block{b}.{3 * j}", x)))
    x = F.adaptive_avg_pool2d(x, 1).flatten(1)
    return F.linear(x, sd["classifier.weight"], sd["classifier.bias"])


# ---- mobilenetv2.py: mobile_half = MobileNetV2(T=6, width_mult=0.5), "MobileNetV2" in model_dict
MOBILE_SETTING = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
MOBILE_SETTING += ((6, 160, 3, 2), (6, 320, 1, 1))
MOBILE_WIDTH = 0.5


def _mobile_layout() -> Shapes:
    keys = _Keys()
    c_in = int(32 * MOBILE_WIDTH)
    keys.conv("conv1.0", 3, c_in, 3)
    keys.bn("conv1.1", c_in)
    for j, (t, c, n, _s) in enumerate(MOBILE_SETTING):
        c_out = int(c * MOBILE_WIDTH)
        for i in range(n):
            hidden = c_in * t
            block = f"blocks.{j}.{i}.conv"
            keys.conv(f"{block}.0", c_in, hidden, 1)
            keys.bn(f"{block}.1", hidden)
            keys.conv(f"{block}.3", hidden, hidden, 3, groups=hidden)
            keys.bn(f"{block}.4", hidden)
            keys.conv(f"{block}.6", hidden, c_out, 1)
            keys.bn(f"{block}.7", c_out)
            c_in = c_out
    keys.conv("conv2.0", c_in, 1280, 1)
    keys.bn("conv2.1", 1280)
    keys.linear("classifier.0", 1280, NUM_CLASSES)
    return keys.shapes


def _mobile_forward(sd: dict[str, Tensor], x: Tensor) -> Tensor:
    x = F.relu(_bn(sd, "conv1.1", _conv(sd, "conv1.0", x, 2)))
    for j, (_t, _c, n, s) in enumerate(MOBILE_SETTING):
        for i in range(n):
            stride = s if i == 0 else 1
            block = f"blocks.{j}.{i}.conv"
            out = F.relu(_bn(sd, f"{block}.1", _conv(sd, f"{block}.0", x)))
            out = F.relu(_bn(sd, f"{block}.4", _conv(sd, f"{block}.3", out, stride)))
            out = _bn(sd, f"{block}.7", _conv(sd, f"{block}.6", out))
            x = x + out if stride == 1 and x.shape[1] == out.shape[1] else out
    x = F.relu(_bn(sd, "conv2.1", _conv(sd, "conv2.0", x)))
    x = F.avg_pool2d(x, 2, ceil_mode=True).flatten(1)  # AvgPool2d(32 // 16) on the 2×2 map
    return F.linear(x, sd["classifier.0.weight"], sd["classifier.0.bias"])


# ---- ShuffleNetv1.py: ShuffleV1, out_planes 240/480/960, blocks 4/8/4, groups 3
SHUFFLE_V1 = ((240, 480, 960), (4, 8, 4), 3)


def _shuffle_v1_layout() -> Shapes:
    keys = _Keys()
    keys.conv("conv1", 3, 24, 1)
    keys.bn("bn1", 24)
    c_in = 24
    widths, counts, groups = SHUFFLE_V1
    for group, (width, count) in enumerate(zip(widths, counts, strict=True), start=1):
        for i in range(count):
            c_out = width - c_in if i == 0 else width  # stride 2 concatenates the input
            mid = c_out // 4
            first = 1 if c_in == 24 else groups
            block = f"layer{group}.{i}"
            keys.conv(f"{block}.conv1", c_in, mid, 1, groups=first)
            keys.bn(f"{block}.bn1", mid)
            keys.conv(f"{block}.conv2", mid, mid, 3, groups=mid)
            keys.bn(f"{block}.bn2", mid)
            keys.conv(f"{block}.conv3", mid, c_out, 1, groups=groups)
            keys.bn(f"{block}.bn3", c_out)
            c_in = width
    keys.linear("linear", widths[-1], NUM_CLASSES)
    return keys.shapes


def _shuffle_v1_forward(sd: dict[str, Tensor], x: Tensor) -> Tensor:
    x = F.relu(_bn(sd, "bn1", _conv(sd, "conv1", x)))
    for group, count in enumerate(SHUFFLE_V1[1], start=1):
        for i in range(count):
            stride = 2 if i == 0 else 1
            block = f"layer{group}.{i}"
            first = x.shape[1] // sd[f"{block}.conv1.weight"].shape[1]
            out = F.relu(_bn(sd, f"{block}.bn1", _conv(sd, f"{block}.conv1", x)))
            out = _shuffle(out, first)
            out = F.relu(_bn(sd, f"{block}.bn2", _conv(sd, f"{block}.conv2", out, stride)))
            out = _bn(sd, f"{block}.bn3", _conv(sd, f"{block}.conv3", out))
            if stride == 2:
                x = F.relu(torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], 1))
            else:
                x = F.relu(out + x)
    x = F.avg_pool2d(x, 4).flatten(1)
    return F.linear(x, sd["linear.weight"], sd["linear.bias"])


# ---- ShuffleNetv2.py: ShuffleV2 = net size 1, out_channels 116/232/464/1024, blocks 3/7/3
SHUFFLE_V2 = ((116, 232, 464, 1024), (3, 7, 3))


def _shuffle_v2_layout() -> Shapes:
    keys = _Keys()
    keys.conv("conv1", 3, 24, 1)
    keys.bn("bn1", 24)
    c_in = 24
    widths, counts = SHUFFLE_V2
    for group, (width, count) in enumerate(zip(widths[:3], counts, strict=True), start=1):
        mid = width // 2
        down = f"layer{group}.0"  # DownBlock(c_in, width)
        keys.conv(f"{down}.conv1", c_in, c_in, 3, groups=c_in)
        keys.bn(f"{down}.bn1", c_in)
        keys.conv(f"{down}.conv2", c_in, mid, 1)
        keys.bn(f"{down}.bn2", mid)
        keys.conv(f"{down}.conv3", c_in, mid, 1)
        keys.bn(f"{down}.bn3", mid)
        keys.conv(f"{down}.conv4", mid, mid, 3, groups=mid)
        keys.bn(f"{down}.bn4", mid)
        keys.conv(f"{down}.conv5", mid, mid, 1)
        keys.bn(f"{down}.bn5", mid)
        for i in range(1, count + 1):  # BasicBlock(width): split in halves
            block = f"layer{group}.{i}"
            keys.conv(f"{block}.conv1", mid, mid, 1)
            keys.bn(f"{block}.bn1", mid)
            keys.conv(f"{block}.conv2", mid, mid, 3, groups=mid)
            keys.bn(f"{block}.bn2", mid)
            keys.conv(f"{block}.conv3", mid, mid, 1)
            keys.bn(f"{block}.bn3", mid)
        c_in = width
    keys.conv("conv2", c_in, widths[3], 1)
    keys.bn("bn2", widths[3])
    keys.linear("linear", widths[3], NUM_CLASSES)
    return keys.shapes


def _shuffle_v2_forward(sd: dict[str, Tensor], x: Tensor) -> Tensor:
    x = F.relu(_bn(sd, "bn1", _conv(sd, "conv1", x)))
    for group, count in enumerate(SHUFFLE_V2[1], start=1):
        down = f"layer{group}.0"
        left = _bn(sd, f"{down}.bn1", _conv(sd, f"{down}.conv1", x, 2))
        left = F.relu(_bn(sd, f"{down}.bn2", _conv(sd, f"{down}.conv2", left)))
        right = F.relu(_bn(sd, f"{down}.bn3", _conv(sd, f"{down}.conv3", x)))
        right = _bn(sd, f"{down}.bn4", _conv(sd, f"{down}.conv4", right, 2))
        right = F.relu(_bn(sd, f"{down}.bn5", _conv(sd, f"{down}.conv5", right)))
        x = _shuffle(torch.cat([left, right], 1), 2)
        for i in range(1, count + 1):
            block = f"layer{group}.{i}"
            half = x.shape[1] // 2
            kept, out = x[:, :half], x[:, half:]
            out = F.relu(_bn(sd, f"{block}.bn1", _conv(sd, f"{block}.conv1", out)))
            out = _bn(sd, f"{block}.bn2", _conv(sd, f"{block}.conv2", out))
            out = F.relu(_bn(sd, f"{block}.bn3", _conv(sd, f"{block}.conv3", out)))
            x = _shuffle(torch.cat([kept, out], 1), 2)
    x = F.relu(_bn(sd, "bn2", _conv(sd, "conv2", x)))
    x = F.avg_pool2d(x, 4).flatten(1)
    return F.linear(x, sd["linear.weight"], sd["linear.bias"])


# ---- the helpers: conv with its padding and groups read from the weight, BN in eval mode


def _conv(sd: dict[str, Tensor], name: str, x: Tensor, stride: int = 1) -> Tensor:
    weight = sd[f"{name}.weight"]
    groups = x.shape[1] // weight.shape[1]
    return F.conv2d(x, weight, sd.get(f"{name}.bias"), stride, weight.shape[-1] // 2, 1, groups)


def _bn(sd: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
    return F.batch_norm(
        x,
        sd[f"{name}.running_mean"],
        sd[f"{name}.running_var"],
        sd[f"{name}.weight"],
        sd[f"{name}.bias"],
        training=False,
        eps=1e-5,
    )


def _shuffle(x: Tensor, groups: int) -> Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


# ---- the table: model_dict name -> (layout, forward)
MODELS: dict[str, tuple[Callable[[], Shapes], Callable[[dict[str, Tensor], Tensor], Tensor]]] = {}
for _name, (_depth, _widths) in CIFAR_RESNETS.items():
    MODELS[_name] = (
        lambda d=_depth, w=_widths: _cifar_resnet_layout(d, w),
        lambda sd, x, d=_depth: _cifar_resnet_forward(sd, x, d),
    )
for _name, (_kind, _counts) in RESNET_V2.items():
    MODELS[_name] = (
        lambda k=_kind, c=_counts: _resnet_v2_layout(k, c),
        lambda sd, x, c=_counts: _resnet_v2_forward(sd, x, c),
    )
for _name, (_depth, _k) in WRNS.items():
    MODELS[_name] = (
        lambda d=_depth, k=_k: _wrn_layout(d, k),
        lambda sd, x, d=_depth: _wrn_forward(sd, x, d),
    )
for _name, _config in VGGS.items():
    MODELS[_name] = (
        lambda c=_config: _vgg_layout(c),
        lambda sd, x, c=_config: _vgg_forward(sd, x, c),
    )
MODELS["MobileNetV2"] = (_mobile_layout, _mobile_forward)
MODELS["ShuffleV1"] = (_shuffle_v1_layout, _shuffle_v1_forward)
MODELS["ShuffleV2"] = (_shuffle_v2_layout, _shuffle_v2_forward)


def layout(name: str) -> Shapes:
    """Every state-dict key of RepDistiller's ``model_dict[name]`` (100 classes) and its shape."""
    return MODELS[name][0]()


def forward(name: str, state: dict[str, Tensor], x: Tensor) -> Tensor:
    """Eval-mode logits of RepDistiller's ``model_dict[name]`` holding ``state``; (B, 100)."""
    return MODELS[name][1](state, x)


def random_state(name: str, generator: torch.Generator) -> dict[str, Tensor]:
    """A state dict of ``layout(name)`` with random values that keep activations of order 1."""
    state = {}
    for key, shape in layout(name).items():
        leaf = key.rsplit(".", 1)[1]
        if leaf == "num_batches_tracked":
            state[key] = torch.randint(1, 10_000, (), generator=generator)
        elif leaf == "running_var":
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif leaf == "weight" and len(shape) == 1:  # BN scale
            state[key] = torch.rand(shape, generator=generator) * 0.5 + 0.5
        elif leaf == "weight":  # conv or linear: He-scaled
            fan_in = int(torch.tensor(shape[1:]).prod())
            state[key] = torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5
        else:  # biases and running means
            state[key] = torch.randn(shape, generator=generator) * 0.1
    return state
