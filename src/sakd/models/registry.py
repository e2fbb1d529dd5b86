"""Models created by name: the decorator-filled zoo, torchvision/timm, and user factories.

A name is one of

- a zoo name (``resnet8x4``; ``sakd models`` lists them), built by its registered factory;
- ``torchvision:ARCH`` or ``timm:ARCH`` (the optional extra ``sakd[vision]``, see
  :mod:`sakd.models.external`);
- ``package.module:factory``: the user's own ``factory(num_classes=...) -> nn.Module``, imported
  from the installed packages or, failing that, from the current directory.

Non-zoo modules are cut into a :class:`StagedNet` by :func:`~sakd.models.wrap.stage_model`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from sakd._autoload import import_user_module
from sakd.errors import SakdError
from sakd.models.staged import StagedNet

_MODELS: dict[str, Callable[..., StagedNet]] = {}


def register_model(name: str) -> Callable[[Callable[..., StagedNet]], Callable[..., StagedNet]]:
    """Register a factory ``f(num_classes=...) -> StagedNet`` under ``name``."""

    def add(factory: Callable[..., StagedNet]) -> Callable[..., StagedNet]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = factory
        return factory

    return add


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_MODELS)


def create_model(
    name: str,
    num_classes: int = 100,
    *,
    pretrained: bool | str | None = None,
    stages: list[str] | None = None,
    head: str | None = None,
    stem: str | None = None,
    input_size: int | None = None,
    check: bool = True,
    **kwargs,
) -> StagedNet:
    """Build the model ``name`` (see the module docstring); unknown names raise :class:`SakdError`.

    ``stages`` / ``head`` / ``stem`` cut a non-zoo module (automatic when left out, see
    :func:`~sakd.models.wrap.stage_model`); ``pretrained`` is a weights file in the module's own
    names (or ``True`` for a library's cached weights); ``input_size`` is the default size for
    ``spot_info`` and the staging probe (224 for non-zoo models when not given).
    """
    if ":" not in name:
        if name not in _MODELS:
            raise SakdError(
                f"unknown model {name!r}: run `sakd models` to list the {len(_MODELS)} models, "
                "or name torchvision:ARCH, timm:ARCH or package.module:factory"
            )
        if stages is not None or head is not None or stem is not None:
            raise SakdError(
                f"zoo model {name!r} has fixed stages: leave model.stages, model.head and "
                "model.stem unset"
            )
        model = _MODELS[name](num_classes=num_classes, **kwargs)
        if input_size is not None:
            model.input_size = input_size
        if pretrained not in (None, False):
            _load_zoo_pretrained(model, pretrained, name)
        return model
    from sakd.models.wrap import stage_model

    module = create_source_module(name, num_classes, pretrained)
    return stage_model(module, stages, head, stem, input_size or 224, check=check)


def _load_zoo_pretrained(model: StagedNet, pretrained: bool | str, name: str) -> None:
    from sakd.models.external import read_state_dict

    if pretrained is True:
        raise SakdError(f"zoo model {name!r} ships no pretrained weights: give a file path")
    model.load_export_state_dict(read_state_dict(str(pretrained)), f"weights {str(pretrained)!r}")


def create_source_module(
    name: str, num_classes: int = 100, pretrained: bool | str | None = None
) -> nn.Module:
    """The unstaged module for ``name``: a zoo net, a torchvision/timm module or a user factory's."""
    from sakd.models.external import create_external_module, is_external, load_pretrained

    if ":" not in name:
        return create_model(name, num_classes, pretrained=pretrained)
    if is_external(name):
        return create_external_module(name, num_classes, pretrained)
    factory = import_factory(name)
    try:
        module = factory(num_classes=num_classes)
    except TypeError as exc:
        raise SakdError(
            f"model factory {name!r} failed ({exc}): it must accept num_classes=N"
        ) from None
    if not isinstance(module, nn.Module):
        raise SakdError(
            f"model factory {name!r} returned {type(module).__name__}, not an nn.Module"
        )
    if pretrained is True:
        raise SakdError(f"user model {name!r}: pretrained must be a weights file path")
    if pretrained not in (None, False):
        load_pretrained(module, str(pretrained), name)
    return module


def import_factory(name: str) -> Callable[..., nn.Module]:
    """The callable named ``package.module:attr``, imported (the current directory as fallback)."""
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise SakdError(f"model name {name!r} must be package.module:factory")
    try:
        found = import_user_module(module_name)
    except ImportError as exc:
        raise SakdError(f"cannot import model factory {name!r} ({exc}): check the name") from None
    factory = getattr(found, attr, None)
    if not callable(factory):
        raise SakdError(f"{module_name!r} has no callable {attr!r}: check model name {name!r}")
    return factory
