"""Recipes: YAML files (a ``base:`` chain of them) and ``KEY=VALUE`` overrides, merged into one mapping.

A :class:`Recipe` remembers who set each dotted key (its provenance), so the resolved config can say
where each loss weight came from.
"""

from __future__ import annotations

import copy
import posixpath
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sakd.errors import SakdError, quoted

RECIPES_PACKAGE = "sakd.recipes"
# The most values a config may hold once its YAML aliases are expanded (a packaged recipe: ~100).
MAX_VALUES = 100_000


def list_recipes() -> list[str]:
    """Names of the packaged recipes (relative paths without ``.yaml``), sorted."""
    root = resources.files(RECIPES_PACKAGE)
    names: list[str] = []

    def walk(node, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(".yaml") and not child.name.startswith("_"):
                names.append(prefix + child.name[: -len(".yaml")])

    walk(root, "")
    return sorted(names)


def check_size(data: Any, what: str) -> None:
    """Refuse ``data`` when its shared (YAML-aliased) parts would expand to over MAX_VALUES values.

    Counted once per distinct object, so an anchor bomb is refused without being expanded.
    """
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list, tuple)):
            return 1
        key = id(node)
        if key not in sizes:
            sizes[key] = MAX_VALUES + 1  # a node that contains itself expands without end
            items = node.values() if isinstance(node, dict) else node
            total = 1
            for item in items:
                total += size(item)
                if total > MAX_VALUES:
                    break
            sizes[key] = total
        return sizes[key]

    try:
        too_big = size(data) > MAX_VALUES
    except RecursionError:
        raise SakdError(f"{what} is nested too deeply to be a recipe: fix it") from None
    if too_big:
        raise SakdError(
            f"{what} expands to more than {MAX_VALUES} values (repeated YAML anchors/aliases): "
            "write the values out instead of nesting aliases"
        )


def leaf_keys(data: dict, prefix: str = "") -> list[str]:
    """Dotted keys of every value in a nested mapping (an empty mapping counts as a value)."""
    keys = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys += leaf_keys(value, dotted + ".")
        else:
            keys.append(dotted)
    return keys


@dataclass(frozen=True)
class Recipe:
    """A recipe's keys (``base:`` chain and overrides merged) and, per dotted key, who set it.

    Sources read ``recipe <name or path>`` for recipe files and ``command line`` for overrides
    (or the label given to :meth:`with_overrides`). Only :func:`validate_config` reads it.
    """

    values: dict
    sources: dict[str, str] = field(default_factory=dict)

    def updated(self, update: dict, label: str) -> Recipe:
        """This recipe with ``update``'s keys merged over it, set by ``label``."""
        sources = {**self.sources, **dict.fromkeys(leaf_keys(update), label)}
        return Recipe(deep_merge(self.values, update), sources)

    def with_overrides(self, overrides: list[str], label: str = "command line") -> Recipe:
        """This recipe with ``KEY=VALUE`` overrides applied, set by ``label``."""
        values = copy.deepcopy(self.values)
        sources = dict(self.sources)
        for item in overrides:
            key, value = _set_override(values, item)
            leaves = leaf_keys(value, key + ".") if isinstance(value, dict) and value else [key]
            sources.update(dict.fromkeys(leaves, label))
        return Recipe(values, sources)


def _read_recipe_text(ref: str, context: str | Path | None) -> tuple[str, str | Path, str]:
    """Text of a recipe given as a file path or a packaged recipe name, where it was found, its name.

    ``context`` is the folder of the recipe that names ``ref`` as its base: a directory
    (``Path``) for files, a packaged folder (``str``, e.g. ``"cifar100/train"``) for recipes.
    """
    if isinstance(context, str):
        name = posixpath.normpath(posixpath.join(context, ref))
        return _read_packaged(name, ref)
    path = Path(ref) if context is None else context / ref
    if path.is_file():
        try:
            return path.read_bytes().decode("utf-8"), path.parent, str(path)
        except UnicodeDecodeError:
            raise SakdError(f"config {ref!r} is not a text file: give a YAML recipe") from None
    if context is None or _is_packaged(ref):
        # A user file may build on a packaged recipe: ``base: quickstart/student``.
        return _read_packaged(ref, ref)
    raise SakdError(
        f"recipe base {ref!r} is neither a file next to the recipe that names it ({context}) nor "
        "a packaged recipe: fix the path, or use a name `sakd recipes` lists"
    )


def _is_packaged(name: str) -> bool:
    name = name[: -len(".yaml")] if name.endswith(".yaml") else name
    return resources.files(RECIPES_PACKAGE).joinpath(*f"{name}.yaml".split("/")).is_file()


def _read_packaged(name: str, ref: str) -> tuple[str, str, str]:
    name = name[: -len(".yaml")] if name.endswith(".yaml") else name
    packaged = resources.files(RECIPES_PACKAGE).joinpath(*f"{name}.yaml".split("/"))
    if not packaged.is_file():
        raise SakdError(
            f"config {ref!r} is neither a file nor a packaged recipe: give a YAML path or one of "
            "the names `sakd recipes` lists"
        )
    return packaged.read_text(), posixpath.dirname(name), name


def load_recipe(ref: str, context: str | Path | None = None, _seen: tuple = ()) -> Recipe:
    """The recipe with its ``base:`` chain merged in (the recipe's keys win), and who set each key."""
    if ref in _seen:
        raise SakdError(f"recipe {ref!r} includes itself through 'base:'; remove the cycle")
    text, where, name = _read_recipe_text(ref, context)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise SakdError(f"config {ref!r} is not valid YAML{line}: fix the syntax") from None
    except RecursionError:
        raise SakdError(
            f"config {ref!r} is nested too deeply to be a recipe: fix the file"
        ) from None
    if data is None:
        data = {}
    check_size(data, f"config {ref!r}")
    if not isinstance(data, dict):
        raise SakdError(f"config {ref!r} must be a YAML mapping of keys to values")
    base = data.pop("base", None)
    parent = Recipe({}) if base is None else load_recipe(str(base), where, (*_seen, ref))
    return parent.updated(data, f"recipe {name}")


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` updated by ``update``, recursing into nested mappings (new dict, inputs untouched)."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _set_override(data: dict, item: str) -> tuple[str, Any]:
    """Apply one ``KEY=VALUE`` override to ``data`` in place; returns the key and the value."""
    key, sep, raw = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise SakdError(
            f"override {quoted(item)} is not KEY=VALUE (e.g. epochs=2 or data.name=cifar100)"
        )
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except (yaml.YAMLError, RecursionError):
        value = raw
    check_size(value, f"override {quoted(item)}")
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SakdError(f"override {quoted(item)}: {quoted(part)} is a value, not a section")
        node = child
    node[parts[-1]] = value
    return key, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``KEY=VALUE`` overrides (dotted keys, YAML-typed values) to a recipe dict."""
    return Recipe(data).with_overrides(overrides).values


def lookup(data: dict, key: str) -> bool:
    """True when the dotted ``key`` is present in the nested mapping ``data``."""
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
