"""Which module names a state dict uses (sakd's, RepDistiller's), and its strict load into a zoo model.

A zoo model loads a state dict in its own names (a sakd checkpoint's) or in RepDistiller's /
mdistiller's names (:mod:`sakd.models.repdistiller`), also with ``torch.nn.DataParallel``'s
``module.`` prefix. Every key must be accounted for, BatchNorm's ``num_batches_tracked`` included.
A state dict that fits none is one :class:`SakdError` naming the nearest layout and its first
mismatching key.
"""

from __future__ import annotations

from torch import Tensor, nn

from sakd.errors import SakdError
from sakd.models.repdistiller import repdistiller_keys

OWN_NAMES = "sakd's module names"
REPDISTILLER_NAMES = "RepDistiller's module names"
PARALLEL_PREFIX = "module."


def name_layouts(model: nn.Module) -> list[tuple[str, dict[str, str]]]:
    """The known layouts of ``model``'s weights: (label, file key -> the model's own key)."""
    own = {key: key for key in model.state_dict()}
    layouts = [(OWN_NAMES, own)]
    foreign = repdistiller_keys(model)
    if foreign is not None:
        layouts.append((REPDISTILLER_NAMES, foreign))
    return layouts


def match_layout(
    model: nn.Module, state: dict[str, Tensor], what: str
) -> tuple[str, dict[str, Tensor]]:
    """``state`` renamed to ``model``'s own names, and the layout's label; a misfit raises."""
    expected = model.state_dict()
    stripped = _strip_parallel_prefix(state)
    candidates = [(label, mapping, state) for label, mapping in name_layouts(model)]
    if stripped is not None:
        candidates += [
            (f"{label} with DataParallel's '{PARALLEL_PREFIX}' prefix", mapping, stripped)
            for label, mapping in name_layouts(model)
        ]
    for label, mapping, named in candidates:
        if named.keys() == mapping.keys() and all(
            named[key].shape == expected[own].shape for key, own in mapping.items()
        ):
            return label, {own: named[key] for key, own in mapping.items()}
    label, mapping, named = max(candidates, key=lambda c: len(c[1].keys() & c[2].keys()))
    matched = len(mapping.keys() & named.keys())
    raise SakdError(
        f"{what} does not fit the architecture of {type(model).__name__}: it fits no known layout "
        f"(sakd's or RepDistiller's module names); nearest: {label} ({matched} of "
        f"{len(mapping)} keys), first mismatch: {_first_mismatch(mapping, named, expected)}; it "
        "must hold the weights of this model name and number of classes"
    )


def _strip_parallel_prefix(state: dict[str, Tensor]) -> dict[str, Tensor] | None:
    """``state`` without a ``module.`` prefix that every key carries, else None."""
    if not state or not all(key.startswith(PARALLEL_PREFIX) for key in state):
        return None
    return {key[len(PARALLEL_PREFIX) :]: value for key, value in state.items()}


def _first_mismatch(
    mapping: dict[str, str], named: dict[str, Tensor], expected: dict[str, Tensor]
) -> str:
    """The first key (in the model's order) that is missing, misshapen or unexpected."""
    for key, own in mapping.items():
        if key not in named:
            return f"missing {key!r}"
        if named[key].shape != expected[own].shape:
            return (
                f"{key!r} has shape {tuple(named[key].shape)}, expected "
                f"{tuple(expected[own].shape)}"
            )
    extra = next(key for key in named if key not in mapping)
    return f"unexpected {extra!r}"
