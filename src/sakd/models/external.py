"""torchvision and timm models by name (``torchvision:resnet18``, ``timm:efficientnet_b0``).

The optional extra ``pip install sakd[vision]`` installs both libraries; importing sakd never needs
them. A model is created with the run's number of classes and staged by
:func:`~sakd.models.wrap.stage_model` (automatic stages and head unless given).

Pretrained weights: ``pretrained=PATH`` loads a local file (a state dict in the library's own
names, ``.pt``/``.pth`` or ``.safetensors``); ``pretrained=True`` takes the library's own weights
from its cache (torchvision: ``torch.hub`` checkpoints; timm: the Hugging Face cache), which must
already hold them where there is no network. When the file's classifier was trained for another
number of classes (e.g. the 1000 ImageNet classes), its head weights are left out and the head keeps
its fresh initialisation; every other key must fit exactly.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from sakd.errors import SakdError

LIBRARIES = ("torchvision", "timm")
INSTALL_HINT = "pip install sakd[vision]"


def is_external(name: str) -> bool:
    """True for ``torchvision:ARCH`` and ``timm:ARCH`` names."""
    library, sep, _ = name.partition(":")
    return bool(sep) and library in LIBRARIES


def create_external_module(
    name: str, num_classes: int = 1000, pretrained: bool | str | None = None
) -> nn.Module:
    """The plain torchvision / timm module for ``name``, with ``num_classes`` outputs."""
    library, _, arch = name.partition(":")
    if library not in LIBRARIES or not arch:
        raise SakdError(f"{name!r} is not a torchvision:ARCH or timm:ARCH model name")
    path = None if pretrained in (None, False, True) else str(pretrained)
    from_cache = pretrained is True
    if library == "torchvision":
        module = _torchvision(arch, num_classes, from_cache)
    else:
        module = _timm(arch, num_classes, from_cache)
    if path is not None:
        load_pretrained(module, path, name)
    return module


def create_external(
    name: str,
    num_classes: int = 1000,
    pretrained: bool | str | None = None,
    stages: list[str] | None = None,
    head: str | None = None,
    stem: str | None = None,
    input_size: int = 224,
    check: bool = True,
):
    """``name`` created by its library and staged by :func:`~sakd.models.wrap.stage_model`."""
    from sakd.models.wrap import stage_model

    module = create_external_module(name, num_classes, pretrained)
    return stage_model(module, stages, head, stem, input_size, check=check)


def _import(library: str):
    try:
        if library == "torchvision":
            import torchvision.models as lib
        else:
            import timm as lib
    except ImportError:
        raise SakdError(f"{library} is not installed: {INSTALL_HINT}") from None
    return lib


def _torchvision(arch: str, num_classes: int, from_cache: bool) -> nn.Module:
    models = _import("torchvision")
    if arch not in models.list_models():
        raise SakdError(
            f"unknown torchvision model {arch!r}: see torchvision.models.list_models() "
            "(e.g. resnet18, mobilenet_v3_small, efficientnet_b0)"
        )
    if not from_cache:
        return models.get_model(arch, weights=None, num_classes=num_classes)
    weights = models.get_model_weights(arch).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file():
        raise SakdError(
            f"pretrained weights of torchvision:{arch} are not in the torch hub cache "
            f"({cached}): download them once where there is network, or set model.pretrained "
            "to a local file"
        )
    module = models.get_model(arch, weights=None)
    load_pretrained(module, str(cached), f"torchvision:{arch}")
    return _reset_head(module, num_classes) if num_classes != _out_features(module) else module


def _timm(arch: str, num_classes: int, from_cache: bool) -> nn.Module:
    timm = _import("timm")
    if not timm.is_model(arch):
        raise SakdError(
            f"unknown timm model {arch!r}: see timm.list_models() "
            "(e.g. efficientnet_b0, mobilenetv3_small_100, resnet18)"
        )
    try:
        return timm.create_model(arch, pretrained=from_cache, num_classes=num_classes)
    except Exception as err:  # noqa: BLE001 - hub or cache failures become one line
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        raise SakdError(
            f"cannot create timm:{arch} with pretrained weights from the cache "
            f"({type(err).__name__}: {reason}): set model.pretrained to a local file"
        ) from None


def _out_features(module: nn.Module) -> int:
    from sakd.models.wrap import find_head

    return module.get_submodule(find_head(module)).out_features


def _reset_head(module: nn.Module, num_classes: int) -> nn.Module:
    """Replace the head ``nn.Linear`` by a fresh one with ``num_classes`` outputs."""
    from sakd.models.wrap import find_head

    path = find_head(module)
    old = module.get_submodule(path)
    parent, _, child = path.rpartition(".")
    owner = module.get_submodule(parent) if parent else module
    setattr(owner, child, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))
    return module


def read_state_dict(path: str) -> dict[str, Tensor]:
    """A state dict from ``path`` (``.safetensors``, or a torch file read with ``weights_only``)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise SakdError(f"pretrained weights file {str(file)!r} does not exist: check the path")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(file))
        else:
            data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is one line for the user
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        raise SakdError(
            f"cannot read weights file {str(file)!r} ({type(err).__name__}: {reason}): it must be "
            "a state dict saved with torch.save or safetensors"
        ) from None
    if isinstance(data, dict):
        for key in ("state_dict", "model", "net"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise SakdError(f"weights file {str(file)!r} does not hold a state dict of tensors")
    return data


def load_pretrained(module: nn.Module, path: str, what: str) -> None:
    """Load the file at ``path`` into ``module`` strictly, except a head sized for other classes."""
    from sakd.models.staged import check_state_dict_keys
    from sakd.models.wrap import find_head

    state = read_state_dict(path)
    own = module.state_dict()
    try:
        head = find_head(module)
    except SakdError:
        head = None
    if head is not None:
        prefix = head + "."
        mismatched = [
            k for k in own if k.startswith(prefix) and k in state and state[k].shape != own[k].shape
        ]
        if mismatched:
            state = {k: v for k, v in state.items() if not k.startswith(prefix)}
            state.update({k: v for k, v in own.items() if k.startswith(prefix)})
    check_state_dict_keys(own, state, f"pretrained weights {path!r}", what)
    with torch.no_grad():
        module.load_state_dict(state, strict=True)
