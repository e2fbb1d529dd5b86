"""Distillation losses, one file per distiller, all taking per-sample weights.

Every module in this package is imported here, so its ``@register_distiller`` classes register.
"""

from sakd._autoload import import_submodules
from sakd.losses.base import (
    DistillContext,
    Distiller,
    DistillerParams,
    DistillerSetup,
    PretrainParams,
)
from sakd.losses.published import PublishedWeights
from sakd.losses.registry import (
    get_distiller,
    list_distillers,
    published_weights_of,
    register_distiller,
)

import_submodules(__name__, __path__)

__all__ = [
    "DistillContext",
    "Distiller",
    "DistillerParams",
    "DistillerSetup",
    "PretrainParams",
    "PublishedWeights",
    "get_distiller",
    "list_distillers",
    "published_weights_of",
    "register_distiller",
]
