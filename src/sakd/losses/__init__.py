"""Distillation losses, one file per distiller, all taking per-sample weights."""

from sakd.losses.base import DistillContext, Distiller, DistillerParams
from sakd.losses.registry import get_distiller, list_distillers, register_distiller

__all__ = [
    "DistillContext",
    "Distiller",
    "DistillerParams",
    "get_distiller",
    "list_distillers",
    "register_distiller",
]
