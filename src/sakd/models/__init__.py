"""The model zoo, torchvision/timm and user modules: every model is a :class:`~sakd.models.staged.StagedNet`.

Every module in this package is imported here, so its ``@register_model`` factories register.
"""

from sakd._autoload import import_submodules
from sakd.models.registry import (
    canonical_name,
    create_model,
    create_source_module,
    list_models,
    model_aliases,
    register_alias,
    register_model,
)
from sakd.models.staged import SpotInfo, StagedNet, resolve_spots

import_submodules(__name__, __path__)

__all__ = [
    "SpotInfo",
    "StagedNet",
    "canonical_name",
    "create_model",
    "create_source_module",
    "list_models",
    "model_aliases",
    "register_alias",
    "register_model",
    "resolve_spots",
]
