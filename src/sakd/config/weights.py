"""The published loss-weight tables and the resolution step that fills a validated config from them.

Each loss weight has one home, in this order of precedence (highest first): the command line, the
recipe files (the pair recipe and its ``base:`` chain, e.g. the protocol's
``spots.routing_ce_weight``), the recipe's per-pair ``distiller.presets``, the published table
(``recipes/_published.yaml``, chosen by ``distiller.published``) and the distiller's ``Params``
defaults. :func:`resolve_weights` is an explicit step after schema validation: it returns every
weight resolved (:class:`ResolvedWeights`), and :func:`resolve` writes them, the chosen distiller's
preset and where each value came from into the config (:meth:`RunConfig.weight_sources`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from sakd.config.schema import LossConfig, RunConfig
from sakd.errors import SakdError, quoted

# The loss weights filled from the published table when no recipe or override sets them.
PUBLISHED_KEYS = (
    "loss.ce_weight",
    "loss.kd_weight",
    "distiller.loss_weight",
    "spots.routing_ce_weight",
)
PUBLISHED_FILE = "src/sakd/recipes/_published.yaml"
# Keys a distiller preset may set on the run itself rather than in the distiller's params.
PRESET_RUN_KEYS = ("batch_size",)
# Vanilla KD (Hinton): the distiller whose temperature is the KD temperature, ``loss.kd_temperature``
# (the one key for it, whether KD is the distiller or the logit-KD term added to another one).
KD_DISTILLER = "kd"
KD_TEMPERATURE_KEY = "loss.kd_temperature"
# The row used without a distiller (a training run): CE alone.
_NO_DISTILLER_ROW = {"ce_weight": 1.0, "kd_weight": 0.0, "routing_ce_weight": 1.0}
_DEFAULT_KD_TEMPERATURE = LossConfig.model_fields["kd_temperature"].default


def published_weights() -> dict[str, dict[str, dict[str, float]]]:
    """The packaged published loss-weight tables (``recipes/_published.yaml``), a fresh copy per call."""
    from sakd.losses.published import packaged_tables

    return {
        table: {name: row.model_dump() for name, row in rows.items()}
        for table, rows in packaged_tables().items()
    }


def source_of(sources: dict[str, str], key: str) -> str | None:
    """Where the dotted ``key`` (or the section holding it) was set, or None when nothing set it."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        found = sources.get(".".join(parts[:end]))
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class ResolvedWeights:
    """Every loss weight of a run, none left unset, and where each came from.

    ``loss_weight`` is the distiller's β (None only for a training run, which has no distiller).
    """

    ce_weight: float
    kd_weight: float
    kd_temperature: float
    routing_ce_weight: float
    loss_weight: float | None
    sources: dict[str, str]


def _configured(config: RunConfig) -> dict[str, Any]:
    """The configured value of each published key (None: unset)."""
    d = config.distiller
    return {
        "loss.ce_weight": config.loss.ce_weight,
        "loss.kd_weight": config.loss.kd_weight,
        "distiller.loss_weight": d.loss_weight if d is not None else None,
        "spots.routing_ce_weight": config.spots.routing_ce_weight,
    }


def _check_registered(name: str) -> None:
    """Raise the registry's one-line error when ``name`` is not a distiller."""
    from sakd.losses import get_distiller

    get_distiller(name)


def _distiller_published(name: str, table: str) -> dict[str, float] | None:
    """The weights distiller ``name`` declares for ``table`` (None: unknown distiller or no row)."""
    from sakd.losses import published_weights_of

    weights = published_weights_of(name, table)
    return None if weights is None else weights.model_dump()


def resolve_weights(
    config: RunConfig, sources: dict[str, str], label: str, stored: bool = False
) -> ResolvedWeights:
    """The config's loss weights with the unset ones taken from the published table.

    ``sources`` holds the keys the recipe files and overrides set, with their source. A KD
    temperature that no KD term uses is an error, except in configs sakd stored itself (``stored``).
    """
    d = config.distiller
    values = _configured(config)
    keys = [k for k in PUBLISHED_KEYS if d is not None or not k.startswith("distiller.")]
    unset = [k for k in keys if source_of(sources, k) is None or values[k] is None]
    row: dict[str, float] = _NO_DISTILLER_ROW
    row_source = "default"
    if d is not None:
        published = _distiller_published(d.name, d.published)
        if published is not None:
            row, row_source = published, f"published:{d.published}"
        elif unset:
            _check_registered(d.name)
            raise SakdError(
                f"{label}: distiller {quoted(d.name)} has no published weights in the "
                f"{d.published!r} table: add it to {PUBLISHED_FILE} or set "
                f"{', '.join(unset)}"
            )
    resolved: dict[str, float] = {}
    where: dict[str, str] = {}
    for key in keys:
        if key in unset:
            resolved[key], where[key] = float(row[key.split(".")[1]]), row_source
        else:
            resolved[key], where[key] = values[key], str(source_of(sources, key))
    temperature, temperature_source = _kd_temperature(config, sources, label)
    used = resolved["loss.kd_weight"] or (d is not None and d.name == KD_DISTILLER)
    unused = not used and temperature != _DEFAULT_KD_TEMPERATURE
    if d is not None and temperature_source is not None and unused and not stored:
        raise SakdError(
            f"{label}: {KD_TEMPERATURE_KEY} is set ({temperature_source}) but no KD term uses it "
            f"(loss.kd_weight=0 and the distiller is {quoted(d.name)}): set loss.kd_weight > 0, or "
            "remove it (a distiller's own temperature, e.g. DKD's, is distiller.params.temperature)"
        )
    where[KD_TEMPERATURE_KEY] = temperature_source or "default"
    return ResolvedWeights(
        ce_weight=resolved["loss.ce_weight"],
        kd_weight=resolved["loss.kd_weight"],
        kd_temperature=temperature,
        routing_ce_weight=resolved["spots.routing_ce_weight"],
        loss_weight=resolved.get("distiller.loss_weight"),
        sources=where,
    )


def _kd_temperature(
    config: RunConfig, sources: dict[str, str], label: str
) -> tuple[float, str | None]:
    """The KD temperature and who set it: the recipe or command line, else vanilla KD's preset.

    A ``kd`` preset's ``temperature`` (e.g. the LS recipes' per-pair base temperature) is the KD
    temperature; it sets ``loss.kd_temperature`` unless the recipe or an override does.
    """
    d = config.distiller
    source = source_of(sources, KD_TEMPERATURE_KEY)
    if source is not None or d is None or d.name != KD_DISTILLER:
        return config.loss.kd_temperature, source
    temperature, source = config.loss.kd_temperature, None
    for name in _preset_names(config):
        if "temperature" in d.presets.get(name, {}):
            value = d.presets[name]["temperature"]
            try:
                temperature = LossConfig(kd_temperature=value).kd_temperature
            except ValidationError as exc:
                raise SakdError(
                    f"{label}: key 'distiller.presets.{name}.temperature' (the KD temperature): "
                    f"{exc.errors()[0]['msg']} (got {quoted(value)})"
                ) from None
            source = _preset_origin(sources, name, "temperature", label)
    return temperature, source


def _preset_names(config: RunConfig) -> tuple[str, str]:
    """The chosen distiller's preset names, later ones winning: ``<name>``, ``<name>@<mode>``."""
    assert config.distiller is not None
    return config.distiller.name, f"{config.distiller.name}@{config.spots.mode}"


def _preset_origin(sources: dict[str, str], name: str, key: str, label: str) -> str:
    """``preset <recipe>``: where the preset ``name``'s ``key`` was set."""
    where = source_of(sources, f"distiller.presets.{name}.{key}") or label
    return "preset " + where.removeprefix("recipe ")


def _apply_presets(config: RunConfig, sources: dict[str, str], label: str) -> dict[str, str]:
    """Merge the chosen distiller's presets: ``<name>``, then ``<name>@<spot mode>``.

    ``params`` wins over both. A preset's run-level keys (``PRESET_RUN_KEYS``: a pair's
    published batch size for one distiller) set the run unless the recipe or an override
    sets that key itself. Returns where each distiller parameter (and run key) came from.
    """
    d = config.distiller
    assert d is not None
    resolved: dict[str, str] = {}
    preset: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name in _preset_names(config):
        for key, value in d.presets.get(name, {}).items():
            if d.name == KD_DISTILLER and key == "temperature":
                continue  # the KD temperature: resolved as loss.kd_temperature
            preset[key] = value
            origin[key] = _preset_origin(sources, name, key, label)
    for key in d.params:
        resolved[f"distiller.params.{key}"] = source_of(sources, f"distiller.params.{key}") or label
    for key in PRESET_RUN_KEYS:
        if key in preset:
            value = preset.pop(key)
            if key not in config.model_fields_set and getattr(config, key) != value:
                setattr(config, key, value)
                resolved[key] = origin[key]
    for key in preset:
        if key not in d.params:
            resolved[f"distiller.params.{key}"] = origin[key]
    if preset:
        d.params = {**preset, **d.params}
    return resolved


def resolve(
    config: RunConfig, sources: dict[str, str], label: str, stored: bool = False
) -> RunConfig:
    """Write the resolved weights and the chosen distiller's preset into ``config`` (in place)."""
    weights = resolve_weights(config, sources, label, stored)
    config.loss.ce_weight = weights.ce_weight
    config.loss.kd_weight = weights.kd_weight
    config.spots.routing_ce_weight = weights.routing_ce_weight
    config.loss.kd_temperature = weights.kd_temperature
    found = dict(weights.sources)
    if config.distiller is not None:
        config.distiller.loss_weight = weights.loss_weight
        found.update(_apply_presets(config, sources, label))
    config.record_weight_sources(found)
    return config
