"""``sakd export`` and ``Run.export``: a run's student weights as a plain state dict in the model's own names.

The file holds only tensors (``torch.load(out, weights_only=True)`` reads it) and loads strictly
into a fresh instance of the user's class: ``MyNet().load_state_dict(torch.load(out))``. Zoo
models are written in their own (sakd) names; ``torchvision:``/``timm:`` models in the library's;
a run trained from a Python object in that object's names (given as ``model``, by the API's
``Run``). Beside it, ``<stem>.json`` (the export's *card*) holds the input contract
(:class:`~sakd.data.contract.InputContract`: mean, std, input size, evaluation resize/crop, class
names), the architecture name and the checkpoint's test top-1; :func:`sakd.exported.load_export`
reads both back with a matching transform. ``format="onnx"`` writes the model with its
normalisation folded in (:mod:`sakd.export_onnx`).
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from sakd._autoload import stored_names
from sakd.config import OBJECT_PREFIX
from sakd.engine.checkpoint import atomic_write_bytes, atomic_write_text
from sakd.engine.divergence import WEIGHT_LIMIT, find_divergence, trained_names
from sakd.engine.rundir import CHECKPOINTS, RunFolder, TrainingCheckpoint
from sakd.errors import SakdError, SakdWarning
from sakd.models import StagedNet

__all__ = [
    "CHECKPOINTS",
    "FORMATS",
    "card_path",
    "export",
    "source_module",
    "source_state_dict",
]


FORMATS = ("pt", "onnx")
CARD_FORMAT = "sakd-export-v1"


def card_path(out: str | Path) -> Path:
    """Where the export's input contract lies: ``student.pt`` -> ``student.json``."""
    return Path(out).expanduser().with_suffix(".json")


def export(
    run_dir: str | Path,
    out: str | Path,
    checkpoint: str = "best",
    model: nn.Module | None = None,
    trust_code: bool = False,
    format: str = "pt",
) -> Path:
    """Write the student of ``run_dir/checkpoints/<checkpoint>.pt`` to ``out``, its card beside it.

    ``checkpoint`` is ``"best"`` (highest test top-1) or ``"last"``; ``model``: the module the run
    trained (for a run trained from a Python object; by default the one its config names, built
    afresh). ``format``: ``pt`` (a state dict in the model's own names) or ``onnx`` (the model
    with the normalisation folded in, taking raw [0, 1] images; needs ``sakd[onnx]``). Beside
    ``out``, ``<stem>.json`` holds the input contract (mean, std, input size, class names), the
    architecture and the checkpoint's top-1 (:func:`sakd.load_export` reads both). The weights
    are the ones the checkpoint marks as evaluated. Both files are written atomically. Returns
    ``out``. Raises :class:`SakdError` (nothing written) for a missing run or checkpoint, a file
    that is not a sakd checkpoint, or weights that do not fit the model. A
    ``package.module:factory`` the checkpoint names is imported only with ``trust_code`` (see
    :func:`sakd._autoload.stored_names`).
    """
    if checkpoint not in CHECKPOINTS:
        raise SakdError(f"checkpoint must be 'best' or 'last', not {checkpoint!r}")
    if format not in FORMATS:
        raise SakdError(f"format must be 'pt' or 'onnx', not {format!r}")
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise SakdError(
            f"run folder {str(folder.path)!r} does not exist: give the output_dir of a run"
        )
    target = Path(out).expanduser()
    if target.is_dir():
        raise SakdError(f"{str(target)!r} is a folder: give a file name such as student.pt")
    if target.suffix == ".json":
        raise SakdError(
            f"{str(target)!r} ends in .json, the name of the export's card: give e.g. student.pt"
        )
    saved = folder.read_checkpoint(checkpoint)
    saved.require_config()
    model_cfg = saved.model_config
    what = str(saved.path)
    staged = saved.evaluated_state_dict()
    if model is None:
        with stored_names(f"checkpoint {what!r}", trusted=trust_code):
            module = source_module(model_cfg, staged, what)
    else:
        module = model
    state = source_state_dict(module, staged, model_cfg.get("head"), what)
    checked = staged if isinstance(module, StagedNet) else state  # in the module's own names
    for line in _divergence_warnings(folder, saved, checked, module):
        warnings.warn(line, SakdWarning, stacklevel=2)
    head = staged.get("head.weight")
    contract = folder.read_info().input
    card = {
        "format": CARD_FORMAT,
        "weights": target.name,
        "weights_format": format,
        "architecture": model_cfg.get("name"),
        "num_classes": int(head.shape[0]) if isinstance(head, torch.Tensor) else None,
        "checkpoint": checkpoint,
        "epoch": saved.epoch,
        "top1": saved.test_top1,
        "run": str(folder.path),
        **(contract.to_dict() if contract is not None else {}),
    }
    if format == "onnx":
        if contract is None:
            raise SakdError(
                f"{str(folder.path)!r} records no input normalisation (run.json from an older "
                "sakd): export --format pt and normalise yourself, or rerun with this sakd"
            )
        from sakd.export_onnx import onnx_bytes

        payload = onnx_bytes(module, state, contract)
        atomic_write_bytes(target, lambda handle: handle.write(payload))
    else:
        atomic_write_bytes(target, lambda handle: torch.save(state, handle))
    atomic_write_text(card_path(target), json.dumps(card, indent=2) + "\n")
    return target


def _divergence_warnings(
    folder: RunFolder, saved: TrainingCheckpoint, state: dict, module: nn.Module
) -> list[str]:
    """What to tell the user when the run diverged, or the exported weights look diverged.

    ``state`` (``saved``'s weights) is in ``module``'s own names: its trained parameters are
    checked against the run's ``weight_limit`` (:mod:`sakd.engine.divergence`).
    """
    lines = []
    details = folder.read_divergence()
    if details is not None:
        where = ""
        if isinstance(details.get("phase"), str) and isinstance(details.get("epoch"), int):
            where = f" in {details['phase']} epoch {details['epoch'] + 1}"
        cause = f" ({details['what']})" if isinstance(details.get("what"), str) else ""
        lines.append(
            f"the run in {str(folder.path)!r} diverged{where} and did not finish{cause}; the "
            f"export holds checkpoints/{saved.path.name} (epoch {saved.epoch}), saved before the "
            "divergence; resume the run with a lower lr to finish it"
        )
    limit = (saved.config or {}).get("weight_limit", WEIGHT_LIMIT)
    if limit is not None and not isinstance(limit, int | float):  # a crafted config
        limit = WEIGHT_LIMIT
    problem = find_divergence({"student": state}, {"student": trained_names(module)}, limit)
    if problem is not None:
        lines.append(
            f"the exported weights look diverged ({problem}): the network will not predict "
            "anything useful; retrain with a lower learning rate"
        )
    return lines


def source_module(model_cfg: dict, state: dict, what: str) -> nn.Module:
    """A fresh module of the architecture ``model_cfg`` names, sized by ``state``'s head."""
    from sakd.models import create_source_module

    name = model_cfg.get("name")
    if not name:
        raise SakdError(f"{what} records no model name")
    if name.startswith(OBJECT_PREFIX):
        raise SakdError(
            f"{what} was trained from a Python object ({name}): export it from Python with "
            "run.export(out) on the Run that sakd.train/sakd.distill returned"
        )
    head_weight = state.get("head.weight")
    if head_weight is None or head_weight.dim() != 2:
        raise SakdError(f"{what} holds no staged head (head.weight): not a sakd student")
    return create_source_module(name, int(head_weight.shape[0]))


def source_state_dict(
    module: nn.Module, state: dict, head: str | None, what: str
) -> dict[str, torch.Tensor]:
    """A checkpoint's staged student weights in ``module``'s own names (CPU tensors; ``module`` kept)."""
    if isinstance(module, StagedNet):
        staged = copy.deepcopy(module).cpu()
        staged.load_weights(state, what)
        return staged.export_state_dict()
    from sakd.models.wrap import find_head, staged_to_source_state_dict

    return staged_to_source_state_dict(state, module, head or find_head(module), what)
