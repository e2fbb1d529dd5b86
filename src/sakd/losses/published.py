"""The loss weights a distiller was published with, one row per published table.

A table (``distiller.published``: ``sakd``, ``repdistiller``, ``ls``) gives a distiller's
``ce_weight``, ``kd_weight``, ``loss_weight`` (β) and ``routing_ce_weight`` (γ). The packaged
distillers' rows are the packaged tables (``recipes/_published.yaml``, with their provenance); a
distiller declares its own rows, beside its ``Params``, in the class attribute
:attr:`~sakd.losses.Distiller.published`, which wins over the packaged row.
"""

from __future__ import annotations

import functools
from importlib import resources

import yaml
from pydantic import BaseModel, ConfigDict

# Where the packaged tables live (package data of sakd.recipes).
PACKAGED_TABLES = ("sakd.recipes", "_published.yaml")


class PublishedWeights(BaseModel):
    """One distiller's loss weights in one published table."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    ce_weight: float
    kd_weight: float
    loss_weight: float
    routing_ce_weight: float


@functools.cache
def packaged_tables() -> dict[str, dict[str, PublishedWeights]]:
    """The packaged tables: table name -> distiller name -> weights."""
    package, name = PACKAGED_TABLES
    tables = yaml.safe_load(resources.files(package).joinpath(name).read_text())
    return {
        table: {distiller: PublishedWeights(**row) for distiller, row in rows.items()}
        for table, rows in tables.items()
    }
