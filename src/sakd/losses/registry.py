"""Distillers created by name from a decorator-filled registry."""

from __future__ import annotations

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
    """The distiller class registered as ``name``; unknown names raise :class:`SakdError`."""
    if name not in _DISTILLERS:
        raise SakdError(
            f"unknown distiller {name!r}: choose one of {', '.join(list_distillers())} "
            "(`sakd distillers` describes them)"
        )
    return _DISTILLERS[name]


def published_weights_of(name: str, table: str) -> PublishedWeights | None:
    """Distiller ``name``'s weights in the published ``table`` (None: no such distiller or row)."""
    cls = _DISTILLERS.get(name)
    return None if cls is None else cls.published_weights(table)
