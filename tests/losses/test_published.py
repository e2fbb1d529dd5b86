"""A distiller's published loss weights: the packaged table's row, or the rows its class declares."""

from importlib import resources

import pytest
import yaml

from sakd.config import load_config
from sakd.losses import PublishedWeights, get_distiller, list_distillers, registry
from sakd.losses.at import AT


def test_packaged_distillers_read_their_rows_of_the_packaged_tables():
    text = resources.files("sakd.recipes").joinpath("_published.yaml").read_text()
    tables = yaml.safe_load(text)
    for table, rows in tables.items():
        for name in list_distillers():
            weights = get_distiller(name).published_weights(table)
            if name in rows:
                assert weights is not None and weights.model_dump() == pytest.approx(rows[name])
            else:
                assert weights is None
    assert get_distiller("at").published_weights("no-such-table") is None


class _Declared(AT):
    name = "declared_at"
    published = {
        "sakd": PublishedWeights(ce_weight=0.5, kd_weight=0, loss_weight=7, routing_ce_weight=3)
    }


def test_rows_declared_on_the_class_fill_the_config(monkeypatch):
    monkeypatch.setitem(registry._DISTILLERS, _Declared.name, _Declared)
    cfg = load_config("quickstart", ["distiller.name=declared_at"])
    assert (cfg.loss.ce_weight, cfg.loss.kd_weight) == (0.5, 0.0)
    assert (cfg.distiller.loss_weight, cfg.spots.routing_ce_weight) == (7.0, 3.0)
    assert cfg.weight_sources()["distiller.loss_weight"] == "published:sakd"
    assert _Declared.published_weights("repdistiller") is None
