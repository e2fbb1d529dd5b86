"""Models created by name: the decorator-filled zoo, torchvision/timm, and user factories.

A name is one of

- a zoo name (``resnet8x4``; ``sakd models`` lists them), built by its registered factory, or an
  alias of one (RepDistiller's spellings: ``ResNet50``, ``MobileNetV2``, ``ShuffleV1``, ``vgg13_bn``);
- ``torchvision:ARCH`` or ``timm:ARCH`` (the optional extra ``sakd[vision]``, see
  :mod:`sakd.models.external`);
- ``package.module:factory``: the user's own ``factory(num_classes=...) -> nn.Module``, imported
  from the installed packages or, failing that, from the current directory. Importing it runs
  its module's code, so a name read from a stored configuration (a checkpoint, a run folder) is
  imported only when the user confirms it (:func:`sakd._autoload.stored_names`).

Non-zoo modules are cut into a :class:`StagedNet` by :func:`~sakd.models.wrap.stage_model`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path

from torch import nn

from sakd._autoload import import_user_module, passes_through, user_code_error
from sakd.errors import SakdError
from sakd.models.staged import StagedNet

_LOG = logging.getLogger(__name__)
_MODELS: dict[str, Callable[..., StagedNet]] = {}
_ALIASES: dict[str, str] = {}


def register_model(name: str) -> Callable[[Callable[..., StagedNet]], Callable[..., StagedNet]]:
    """Register a factory ``f(num_classes=...) -> StagedNet`` under ``name``."""

    def add(factory: Callable[..., StagedNet]) -> Callable[..., StagedNet]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = factory
        return factory

    return add


def register_alias(alias: str, name: str) -> None:
    """Accept ``alias`` wherever the zoo model ``name`` is named (another codebase's spelling)."""
    if alias in _MODELS or alias in _ALIASES:
        raise ValueError(f"model alias {alias!r} registered twice")
    _ALIASES[alias] = name


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_MODELS)


def model_aliases() -> dict[str, str]:
    """Every alias and the zoo model it names."""
    return dict(sorted(_ALIASES.items()))


def canonical_name(name: str) -> str:
    """The zoo name ``name`` stands for: an alias's model, otherwise ``name`` itself."""
    return _ALIASES.get(name, name)


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
        name = canonical_name(name)
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
    """Load a weights file into a zoo model and log which layout it was found in.

    ``.safetensors`` files hold a plain state dict; any other file is read safely and may be a sakd
    checkpoint, a RepDistiller / mdistiller checkpoint, a wrapper or a bare state dict, in sakd's or
    RepDistiller's module names (:func:`~sakd.engine.checkpoint.extract_weights`,
    :mod:`sakd.models.layouts`).
    """
    from sakd.engine.checkpoint import extract_weights, load_checkpoint
    from sakd.models.external import read_state_dict

    if pretrained is True:
        raise SakdError(f"zoo model {name!r} ships no pretrained weights: give a file path")
    path = Path(str(pretrained)).expanduser()
    if path.suffix == ".safetensors":
        state, container = read_state_dict(str(path)), "a safetensors state dict"
    else:
        state, container = extract_weights(load_checkpoint(path))
    names = model.load_weights(state, f"weights {str(path)!r} for {name!r}")
    _LOG.info("%s: %s in %s", path, container, names)


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
        inspect.signature(factory).bind(num_classes=num_classes)
    except TypeError as exc:
        raise SakdError(
            f"model factory {name!r} cannot be called with num_classes ({exc}): it must accept "
            "num_classes=N"
        ) from None
    except ValueError:  # no signature to check (e.g. a builtin): calling it will tell
        pass
    try:
        module = factory(num_classes=num_classes)
    except BaseException as exc:  # the user's factory: one line (interrupts pass)
        if passes_through(exc):
            raise
        raise user_code_error(f"model factory {name!r}", exc) from exc
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
        found = import_user_module(module_name, name)
    except ImportError as exc:
        raise SakdError(f"cannot import model factory {name!r} ({exc}): check the name") from None
    factory = getattr(found, attr, None)
    if not callable(factory):
        raise SakdError(f"{module_name!r} has no callable {attr!r}: check model name {name!r}")
    return factory
