"""Reading an export back: ``sakd.load_export(path, model)`` -> the model with its weights and transform.

An export (``sakd export RUN --out student.pt`` / ``Run.export``) is two files: the weights and
``student.json`` beside them (see :mod:`sakd.export`). :func:`load_export` loads the weights
strictly into ``model`` and returns it in eval mode with an
:class:`~sakd.data.contract.InputTransform` that turns raw images into what the network saw at
evaluation: ``model(transform(image)[None])`` gives the logits the run measured its top-1 on.
The transform is sakd's own, written with torch ops (torchvision is not needed): a PIL image or a
uint8 / [0, 1] float tensor, (C, H, W) or (N, C, H, W), in; a normalised float32 tensor out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sakd.data.contract import InputContract, InputTransform
from sakd.errors import SakdError
from sakd.export import card_path


@dataclass(frozen=True)
class ExportCard:
    """``student.json``: the input contract, the architecture and the top-1 of an export."""

    contract: InputContract
    architecture: str | None
    top1: float | None
    values: dict[str, Any]

    @classmethod
    def read(cls, path: str | Path) -> ExportCard:
        """The card beside the export ``path`` (``student.pt`` -> ``student.json``); one line if bad."""
        card = card_path(path)
        try:
            values = json.loads(card.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise SakdError(
                f"{str(card)!r} does not exist: keep the .json that `sakd export` writes beside "
                "the weights (or export again)"
            ) from None
        except (OSError, ValueError, RecursionError) as exc:
            raise SakdError(
                f"cannot read {str(card)!r} ({type(exc).__name__}): export again"
            ) from None
        if not isinstance(values, dict):
            raise SakdError(f"{str(card)!r} is not an export card: export again")
        try:
            contract = InputContract.from_dict(values)
        except ValueError as exc:
            raise SakdError(
                f"{str(card)!r} holds no usable input contract ({exc}): the run folder was "
                "written by an older sakd; rerun it with this version, or normalise yourself"
            ) from None
        top1 = values.get("top1")
        return cls(
            contract=contract,
            architecture=values.get("architecture"),
            top1=float(top1) if isinstance(top1, (int, float)) else None,
            values=values,
        )


def load_export(path: str | Path, model: nn.Module) -> tuple[nn.Module, InputTransform]:
    """Load the exported weights at ``path`` into ``model`` (strictly); returns it and its transform.

    ``model`` is a fresh instance of the exported architecture (your class, built as for the run).
    It is returned in eval mode, on its device; ``transform.contract`` holds the card's input
    contract (``class_names``, ``mean``, ...). Raises :class:`SakdError` for a missing or damaged
    file, an ONNX export (run it with onnxruntime) or weights that do not fit ``model``.
    """
    if not isinstance(model, nn.Module):
        raise SakdError(
            f"sakd.load_export: model is a {type(model).__name__}: give a fresh instance of the "
            "exported architecture (an nn.Module, e.g. MyNet(num_classes=N)) to load the weights into"
        )
    weights = Path(path).expanduser()
    if not weights.exists():
        raise SakdError(f"{str(weights)!r} does not exist: give the file `sakd export` wrote")
    card = ExportCard.read(weights)
    if card.values.get("weights_format", "pt") != "pt":
        raise SakdError(
            f"{str(weights)!r} is an ONNX export: run it with onnxruntime (it takes raw [0, 1] "
            "images), or export --format pt for load_export"
        )
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SakdError(
            f"{str(weights)!r} does not exist: give the file `sakd export` wrote"
        ) from None
    except Exception as exc:  # torch raises many types for a damaged file
        raise SakdError(
            f"cannot read {str(weights)!r} ({type(exc).__name__}): the file is damaged; export again"
        ) from None
    if not isinstance(state, dict):
        raise SakdError(f"{str(weights)!r} is not a state dict: give the file `sakd export` wrote")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0] if first else ""
        raise SakdError(
            f"{str(weights)!r} does not fit {type(model).__name__} ({detail[:160]}): build the "
            f"architecture the run trained ({card.architecture}) with "
            f"{len(card.contract.class_names)} classes"
        ) from None
    return model.eval(), InputTransform(card.contract)
