"""Models created by name from a decorator-filled registry."""

from __future__ import annotations

from collections.abc import Callable

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


def create_model(name: str, num_classes: int = 100, **kwargs) -> StagedNet:
    """Build the model registered as ``name``; unknown names raise :class:`SakdError`."""
    if name not in _MODELS:
        raise SakdError(
            f"unknown model {name!r}: run `sakd models` to list the {len(_MODELS)} models"
        )
    return _MODELS[name](num_classes=num_classes, **kwargs)
