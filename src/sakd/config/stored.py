"""Configs sakd stored itself (``config.yaml`` of a run folder, a checkpoint's config): renamed keys and dumps.

Keys renamed since a config was written are an error in a user's recipe but are read under their new
names in a stored config.
"""

from __future__ import annotations

import copy

import yaml

from sakd.config.schema import RunConfig

# Keys renamed so that no two hyperparameters share a name: old dotted key -> new one.
RENAMED_KEYS = {
    "distiller.beta": "distiller.loss_weight",
    "distiller.weights": "distiller.published",
    "loss.ce": "loss.ce_weight",
    "loss.kd": "loss.kd_weight",
    "schedule.gamma": "schedule.lr_decay",
    "spots.gamma": "spots.routing_ce_weight",
}


def upgrade_renamed_keys(data: dict) -> dict:
    """A stored config (written by an older sakd) with its renamed keys moved to the new names."""
    data = copy.deepcopy(data)
    for old, new in RENAMED_KEYS.items():
        section, old_name = old.split(".")
        node = data.get(section)
        if isinstance(node, dict) and old_name in node:
            node.setdefault(new.split(".")[1], node.pop(old_name))
    return data


def dump_config(config: RunConfig) -> str:
    """The resolved configuration as YAML text."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
