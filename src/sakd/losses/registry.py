"""Distillers created by name from a decorator-filled registry."""

from __future__ import annotations

from sakd._autoload import import_user_module
from sakd.errors import SakdError
from sakd.losses.base import Distiller
from sakd.losses.published import PublishedWeights

_DISTILLERS: dict[str, type[Distiller]] = {}


def register_distiller(cls: type[Distiller]) -> type[Distiller]:
    """Class decorator: register ``cls`` under ``cls.name``."""
    if cls.name in _DISTILLERS:
        raise ValueError(f"distiller {cls.name!r} registered twice")
    _DISTILLERS[cls.name] = cls
    return cls


def list_distillers() -> list[str]:
    """Names of every registered distiller, sorted."""
    return sorted(_DISTILLERS)


def get_distiller(name: str) -> type[Distiller]:
    """The distiller class registered as ``name``, or the user's ``package.module:Class``.

    A ``package.module:Class`` name is imported from the installed packages or, failing that,
    the current directory (as a user's model factory is). Unknown names raise :class:`SakdError`.
    """
    if name in _DISTILLERS:
        return _DISTILLERS[name]
    if ":" in name:
        return _import_distiller(name)
    raise SakdError(
        f"unknown distiller {name!r}: choose one of {', '.join(list_distillers())} "
        "(`sakd distillers` describes them), or name your own as package.module:Class"
    )


def _import_distiller(name: str) -> type[Distiller]:
    module_name, _, attr = name.partition(":")
    try:
        found = getattr(import_user_module(module_name, name), attr, None)
    except ImportError as exc:
        raise SakdError(f"cannot import distiller {name!r} ({exc}): check the name") from None
    if not (isinstance(found, type) and issubclass(found, Distiller)):
        raise SakdError(
            f"{name!r} is not a distiller: {module_name!r} must define a subclass {attr!r} of "
            "sakd.losses.Distiller"
        )
    for key, example in (("name", "'my_distiller'"), ("spot_role", "'stages' or 'logits'")):
        if not isinstance(getattr(found, key, None), str):
            raise SakdError(
                f"distiller {name!r} sets no class attribute {key!r}: give the class "
                f"{key} = {example} (docs/distillers.md: Write your own distiller)"
            )
    return found


def published_weights_of(name: str, table: str) -> PublishedWeights | None:
    """Distiller ``name``'s weights in the published ``table`` (None: no such distiller or row)."""
    try:
        cls = get_distiller(name)
    except SakdError:
        return None
    return cls.published_weights(table)
