"""Configs sakd stored itself (``config.yaml`` of a run folder, a checkpoint's config): renamed keys and dumps.

Keys renamed since a config was written are an error in a user's recipe but are read under their new
names in a stored config.
"""

from __future__ import annotations

import copy

import yaml

from sakd.config.schema import RunConfig
from sakd.config.weights import KD_DISTILLER, KD_TEMPERATURE_KEY

# Keys renamed so that no two hyperparameters share a name: old dotted key -> new one.
RENAMED_KEYS = {
    "distiller.beta": "distiller.loss_weight",
    "distiller.weights": "distiller.published",
    "loss.ce": "loss.ce_weight",
    "loss.kd": "loss.kd_weight",
    "schedule.gamma": "schedule.lr_decay",
    "spots.gamma": "spots.routing_ce_weight",
}
# Vanilla KD's own temperature, renamed to the one KD temperature key (KD_TEMPERATURE_KEY).
OLD_KD_TEMPERATURE = "distiller.params.temperature"


def upgrade_renamed_keys(data: dict) -> dict:
    """A stored config (written by an older sakd) with its renamed keys moved to the new names."""
    data = copy.deepcopy(data)
    for old, new in RENAMED_KEYS.items():
        section, old_name = old.split(".")
        node = data.get(section)
        if isinstance(node, dict) and old_name in node:
            node.setdefault(new.split(".")[1], node.pop(old_name))
    params = _kd_params(data.get("distiller"))
    if params is not None and "temperature" in params:
        loss = data.setdefault("loss", {})
        if isinstance(loss, dict):
            loss[KD_TEMPERATURE_KEY.split(".")[1]] = params.pop("temperature")
    return data


def _kd_params(distiller: object) -> dict | None:
    """The ``params`` mapping of a raw ``distiller`` section naming vanilla KD, else None."""
    if not isinstance(distiller, dict) or distiller.get("name", KD_DISTILLER) != KD_DISTILLER:
        return None
    params = distiller.get("params")
    return params if isinstance(params, dict) else None


def renamed_key_error(config: RunConfig, source: str) -> str | None:
    """The renamed-key message for vanilla KD's old temperature key in ``config``, if it is set."""
    d = config.distiller
    if d is not None and d.name == KD_DISTILLER and "temperature" in d.params:
        return (
            f"{source}: key {OLD_KD_TEMPERATURE!r} was renamed to {KD_TEMPERATURE_KEY!r} "
            "(vanilla KD's temperature is the KD temperature)"
        )
    return None


def dump_config(config: RunConfig) -> str:
    """The resolved configuration as YAML text."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
