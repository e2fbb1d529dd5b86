"""From a recipe to a validated, resolved :class:`RunConfig`: schema, renamed keys, weights, one-line errors.

Nothing downstream reads raw YAML: the CLI turns a recipe and its overrides into a
:class:`RunConfig` here, and every builder takes that object. Unknown keys, renamed keys and wrong
types are rejected with the key named (:class:`~sakd.errors.SakdError`).
"""

from __future__ import annotations

import contextlib

from pydantic import ValidationError

from sakd._autoload import stored_names
from sakd.config.recipes import Recipe, check_size, leaf_keys, load_recipe, lookup
from sakd.config.schema import RunConfig
from sakd.config.stored import RENAMED_KEYS, renamed_key_error, upgrade_renamed_keys
from sakd.config.weights import resolve
from sakd.errors import SakdError, quoted

RESUME_IGNORED_KEYS = (
    "progress",
    "resume",
    "device",
    "output_dir",
    "name",
    "baseline",
    "weight_limit",
)


def validate_config(data: dict | Recipe, source: str = "config", stored: bool = False) -> RunConfig:
    """Validate a recipe into a :class:`RunConfig` and resolve its weights; errors name the key.

    A plain dict counts as set by ``source``; a :class:`Recipe` says who set each key. Renamed keys
    are an error naming the new key, except in configs sakd itself stored (``stored=True``:
    ``config.yaml`` of a run folder, a checkpoint's config), which are read under the new names.
    The ``package.module:Class`` distillers a stored config names are imported only as
    :func:`sakd._autoload.stored_names` allows.
    """
    if isinstance(data, Recipe):
        recipe = data
    else:
        check_size(data, source)
        values = upgrade_renamed_keys(data) if stored else data
        recipe = Recipe(values, dict.fromkeys(leaf_keys(values), source))
    values = recipe.values
    for old, new in RENAMED_KEYS.items():
        if lookup(values, old):
            raise SakdError(f"{source}: key {old!r} was renamed to {new!r}")
    try:
        config = RunConfig.model_validate(values)
        renamed = renamed_key_error(config, source)
        if renamed is not None:
            raise SakdError(renamed)
        with stored_names(source) if stored else contextlib.nullcontext():
            resolve(config, recipe.sources, source, stored)
        config.format_output_dir()
    except ValidationError as exc:
        raise SakdError(_one_line(exc, source)) from None
    except ValueError as exc:
        raise SakdError(f"{source}: key 'output_dir' {exc}") from None
    return config


def _one_line(exc: ValidationError, source: str) -> str:
    """The first schema error as one line naming the key."""
    err = exc.errors()[0]
    key = quoted(".".join(str(p) for p in err["loc"]) or "(top level)")
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key {key}; check its spelling (see the packaged recipes)"
    if err["type"] == "missing":
        return f"{source}: key {key} is required; add it to the recipe or as {key[1:-1]}=VALUE"
    return f"{source}: key {key}: {err['msg']} (got {quoted(err.get('input'))})"


def load_config(ref: str, overrides: list[str] | None = None) -> RunConfig:
    """Recipe (path or packaged name) + overrides → validated :class:`RunConfig`."""
    try:
        recipe = load_recipe(ref).with_overrides(overrides or [])
        return validate_config(recipe, source=f"config {quoted(ref)}")
    except RecursionError:
        raise SakdError(
            f"config {quoted(ref)} is nested too deeply to be a recipe: fix it"
        ) from None


def config_differences(saved: dict, config: RunConfig) -> list[str]:
    """Top-level keys in which a stored config differs from ``config`` (resume-irrelevant ones aside).

    The stored dict is compared through the schema, so fields added since it was written take
    their defaults; one that no longer validates is compared as written. Of the user code it
    names, only what ``config`` names too is imported (:func:`sakd._autoload.stored_names`).
    """
    named = [config.model.name, config.loss.logit_distiller]
    named += [part.name for part in (config.teacher, config.distiller) if part is not None]
    with contextlib.suppress(SakdError), stored_names("a stored configuration", named):
        saved = validate_config(saved, stored=True).model_dump(mode="json")
    current = config.model_dump(mode="json")
    keys = (set(saved) | set(current)) - set(RESUME_IGNORED_KEYS)
    return sorted(k for k in keys if saved.get(k) != current.get(k))
