"""RepDistiller's and mdistiller's CIFAR models: their model names and module names in the zoo's terms.

RepDistiller (HobbitLong/RepDistiller, ``models/*.py``) saved the teachers every CIFAR-100 table
distils from; mdistiller (megvii-research/mdistiller, ``mdistiller/models/cifar/``) re-ships the same
files and defines its models with the same module names. The zoo builds the same architectures
under other module paths (``stages.1.0.conv1`` where RepDistiller has ``layer1.0.conv1``), so a
checkpoint of theirs loads once every key is renamed. :func:`repdistiller_keys` gives, for every
zoo model with a RepDistiller counterpart, RepDistiller's name of each of its state-dict keys;
:data:`MODEL_NAMES` maps RepDistiller's spellings of the model names onto the zoo's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from torch import nn

from sakd.models.mobilenetv2 import INVERTED_RESIDUAL_SETTING, STAGE_BLOCKS, MobileNetV2
from sakd.models.registry import register_alias
from sakd.models.resnet import CifarResNet
from sakd.models.resnet_imagenet import ResNetCifarStem
from sakd.models.shufflenetv1 import ShuffleNetV1
from sakd.models.shufflenetv2 import ShuffleNetV2
from sakd.models.vgg import VGG
from sakd.models.wrn import WideResNet

# The zoo models whose key in RepDistiller's (and mdistiller's) ``model_dict`` is spelled otherwise.
# Its "MobileNetV2" is ``mobile_half`` (width 0.5); the zoo's ``mobilenetv2`` is the SAKD authors'
# width-1.0 model. ResNet18 is mdistiller's addition, from the same resnetv2.py.
MODEL_DICT_NAMES: dict[str, str] = {
    "resnet18": "ResNet18",
    "resnet50": "ResNet50",
    "mobilenetv2_half": "MobileNetV2",
    "shufflev1": "ShuffleV1",
    "shufflev2": "ShuffleV2",
}
# Every RepDistiller spelling the zoo accepts: the model_dict keys above, the factory names behind
# them (``mobile_half``, ``ResNet34``) and ``vgg8_bn`` … ``vgg19_bn`` (its ``vgg8`` … ``vgg19``
# are these ``_bn`` variants, as the zoo's are).
MODEL_NAMES: dict[str, str] = {
    **{spelling: name for name, spelling in MODEL_DICT_NAMES.items()},
    "ResNet34": "resnet34",
    "mobile_half": "mobilenetv2_half",
    **{f"vgg{depth}_bn": f"vgg{depth}" for depth in (8, 11, 13, 16, 19)},
}
# RepDistiller's scripts/fetch_pretrained_teachers.sh (and mdistiller's cifar_teachers.tar) put
# each teacher at <model_dict key>_vanilla/ckpt_epoch_240.pth.
TEACHER_FILE = "{}_vanilla/ckpt_epoch_240.pth"


def published_teacher_file(teachers_dir: str | Path, name: str) -> Path:
    """Where the published checkpoint of the zoo model ``name`` lies in a teachers folder."""
    return Path(teachers_dir).expanduser() / TEACHER_FILE.format(MODEL_DICT_NAMES.get(name, name))


for _alias, _name in MODEL_NAMES.items():
    register_alias(_alias, _name)

_Rename = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]


def _rules(*rules: tuple[str, str | Callable[[re.Match[str]], str]]) -> list[_Rename]:
    """Compile (prefix regex, replacement) pairs; a string replacement is used as it is."""
    return [
        (re.compile(pattern), (lambda _m, new=new: new) if isinstance(new, str) else new)
        for pattern, new in rules
    ]


def _block(prefix: str, step: int = 2, suffix: str = "") -> Callable[[re.Match[str]], str]:
    """``stages.G.I.`` -> ``{prefix}G.{I // step}.{suffix}``: residual groups interleave a ReLU."""
    return lambda m: f"{prefix}{m[1]}.{int(m[2]) // step}.{suffix}"


# RepDistiller resnet.py: conv1, bn1, layer1-3 of BasicBlocks (downsample = 1×1 conv + BN), fc.
_CIFAR_RESNET = _rules(
    (r"stages\.0\.0\.", "conv1."),
    (r"stages\.0\.1\.", "bn1."),
    (r"stages\.([1-3])\.(\d+)\.shortcut\.", _block("layer", suffix="downsample.")),
    (r"stages\.([1-3])\.(\d+)\.", _block("layer")),
    (r"head\.", "fc."),
)
# resnetv2.py: conv1, bn1, layer1-4 (the projection is called shortcut there too), linear.
_RESNET_V2 = _rules(
    (r"stages\.0\.0\.", "conv1."),
    (r"stages\.0\.1\.", "bn1."),
    (r"stages\.([1-4])\.(\d+)\.", _block("layer")),
    (r"head\.", "linear."),
)
# wrn.py: conv1, block1-3.layer.I (bn1, conv1, bn2, conv2, convShortcut), the final bn1, fc.
_WRN = _rules(
    (r"stages\.0\.", "conv1."),
    (r"stages\.([1-3])\.(\d+)\.shortcut\.", lambda m: f"block{m[1]}.layer.{m[2]}.convShortcut."),
    (r"stages\.([1-3])\.(\d+)\.", lambda m: f"block{m[1]}.layer.{m[2]}."),
    (r"stages\.4\.0\.", "bn1."),
    (r"head\.", "fc."),
)
# vgg.py: block0-4 as (conv, BN, ReLU)* without the last ReLU, classifier. The zoo's blocks 1-4
# start with their max-pool, so their indices are one higher.
_VGG = _rules(
    (r"stages\.0\.(\d+)\.", lambda m: f"block0.{m[1]}."),
    (r"stages\.([1-4])\.(\d+)\.", lambda m: f"block{m[1]}.{int(m[2]) - 1}."),
    (r"head\.", "classifier."),
)
# ShuffleNetv1.py: conv1, bn1, layer1-3 of bottlenecks (the avg-pool shortcut has no weights), linear.
_SHUFFLE_V1 = _rules(
    (r"stages\.0\.0\.", "conv1."),
    (r"stages\.0\.1\.", "bn1."),
    (r"stages\.([1-3])\.(\d+)\.", _block("layer")),
    (r"head\.", "linear."),
)
# ShuffleNetv2.py: conv1, bn1, layer1-3 (a DownBlock, then BasicBlocks), conv2, bn2, linear.
_SHUFFLE_V2 = _rules(
    (r"stages\.0\.0\.", "conv1."),
    (r"stages\.0\.1\.", "bn1."),
    (r"stages\.([1-3])\.(\d+)\.", _block("layer", 1)),
    (r"stages\.4\.0\.", "conv2."),
    (r"stages\.4\.1\.", "bn2."),
    (r"head\.", "linear."),
)


def _mobilenet_block_index() -> dict[tuple[int, int], tuple[int, int]]:
    """(zoo stage, position in it) -> (RepDistiller's ``blocks`` index, position in that group)."""
    table = {}
    for stage, settings in enumerate(STAGE_BLOCKS, start=1):
        position = 0
        for setting in settings:
            for i in range(INVERTED_RESIDUAL_SETTING[setting][2]):
                table[stage, position] = (setting, i)
                position += 1
    return table


_MOBILENET_BLOCKS = _mobilenet_block_index()
# mobilenetv2.py: conv1 (conv, BN, ReLU), blocks.J.I.conv.K, conv2 (conv, BN, ReLU), classifier.0.
_MOBILENET = _rules(
    (r"stages\.0\.(\d)\.", lambda m: f"conv1.{m[1]}."),
    (
        r"stages\.([1-4])\.(\d+)\.",
        lambda m: "blocks.{}.{}.".format(*_MOBILENET_BLOCKS[int(m[1]), int(m[2])]),
    ),
    (r"stages\.5\.(\d)\.", lambda m: f"conv2.{m[1]}."),
    (r"head\.", "classifier.0."),
)

_RULES: dict[type[nn.Module], list[_Rename]] = {
    CifarResNet: _CIFAR_RESNET,
    ResNetCifarStem: _RESNET_V2,
    WideResNet: _WRN,
    VGG: _VGG,
    MobileNetV2: _MOBILENET,
    ShuffleNetV1: _SHUFFLE_V1,
    ShuffleNetV2: _SHUFFLE_V2,
}


def repdistiller_keys(model: nn.Module) -> dict[str, str] | None:
    """RepDistiller's key -> the zoo's key, for every state-dict entry; None if it has no such model."""
    rules = _RULES.get(type(model))
    if rules is None:
        return None
    mapping = {}
    for key in model.state_dict():
        for pattern, new in rules:
            found = pattern.match(key)
            if found:
                mapping[new(found) + key[found.end() :]] = key
                break
        else:
            raise AssertionError(f"no RepDistiller name for {type(model).__name__} key {key!r}")
    return mapping
