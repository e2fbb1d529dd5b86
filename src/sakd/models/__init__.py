"""The model zoo: every model is a :class:`~sakd.models.staged.StagedNet`."""

from sakd.models.registry import create_model, list_models, register_model
from sakd.models.staged import SpotInfo, StagedNet, resolve_spots

__all__ = ["SpotInfo", "StagedNet", "create_model", "list_models", "register_model", "resolve_spots"]
