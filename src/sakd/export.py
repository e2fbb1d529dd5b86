"""``sakd export`` and ``Run.export``: a run's student weights as a plain state dict in the model's own names.

The file holds only tensors (``torch.load(out, weights_only=True)`` reads it) and loads strictly
into a fresh instance of the user's class: ``MyNet().load_state_dict(torch.load(out))``. Zoo
models are written in their own (sakd) names; ``torchvision:``/``timm:`` models in the library's;
a run trained from a Python object in that object's names (given as ``model``, by the API's
``Run``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from sakd.config import OBJECT_PREFIX
from sakd.engine.checkpoint import atomic_write_bytes
from sakd.engine.rundir import CHECKPOINTS, RunFolder
from sakd.errors import SakdError
from sakd.models import StagedNet

__all__ = ["CHECKPOINTS", "export", "export_state_dict", "source_state_dict"]


def export(
    run_dir: str | Path, out: str | Path, checkpoint: str = "best", model: nn.Module | None = None
) -> Path:
    """Write the student of ``run_dir/checkpoints/<checkpoint>.pt`` to ``out`` atomically.

    ``checkpoint`` is ``"best"`` (highest test top-1) or ``"last"``; ``model``: the module the run
    trained (for a run trained from a Python object; by default the one its config names, built
    afresh). Returns the written path. Raises :class:`SakdError` (nothing written) for a missing
    run or checkpoint, a file that is not a sakd checkpoint, or weights that do not fit the model.
    """
    if checkpoint not in CHECKPOINTS:
        raise SakdError(f"checkpoint must be 'best' or 'last', not {checkpoint!r}")
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise SakdError(
            f"run folder {str(folder.path)!r} does not exist: give the output_dir of a run"
        )
    saved = folder.read_checkpoint(checkpoint)
    saved.require_config()
    model_cfg = saved.model_config
    what = str(saved.path)
    state = saved.state_dict()
    if model is None:
        state = export_state_dict(model_cfg, state, what)
    else:
        state = source_state_dict(model, state, model_cfg.get("head"), what)
    target = Path(out).expanduser()
    if target.is_dir():
        raise SakdError(f"{str(target)!r} is a folder: give a file name such as student.pt")
    atomic_write_bytes(target, lambda handle: torch.save(state, handle))
    return target


def export_state_dict(model_cfg: dict, state: dict, what: str) -> dict[str, torch.Tensor]:
    """``state`` (a staged student's weights) in the names of the module ``model_cfg`` names."""
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
    module = create_source_module(name, int(head_weight.shape[0]))
    return source_state_dict(module, state, model_cfg.get("head"), f"{what} for {name!r}")


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
