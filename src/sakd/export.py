"""``sakd export``: a run's student weights as a plain state dict in the model's own names.

The file holds only tensors (``torch.load(out, weights_only=True)`` reads it) and loads strictly
into a fresh instance of the user's class: ``MyNet().load_state_dict(torch.load(out))``. Zoo
models are written in their own (sakd) names; ``torchvision:``/``timm:`` models in the library's.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from sakd.config import OBJECT_PREFIX
from sakd.engine.checkpoint import FORMAT, atomic_write_bytes, extract_state_dict, load_checkpoint
from sakd.errors import SakdError
from sakd.models.registry import stored_names

CHECKPOINTS = ("best", "last")


def export(
    run_dir: str | Path, out: str | Path, checkpoint: str = "best", trust_code: bool = False
) -> Path:
    """Write the student of ``run_dir/checkpoints/<checkpoint>.pt`` to ``out`` atomically.

    ``checkpoint`` is ``"best"`` (highest test top-1) or ``"last"``. Returns the written path.
    Raises :class:`SakdError` (nothing written) for a missing run or checkpoint, a file that is
    not a sakd checkpoint, or weights that do not fit the recorded model. The recorded model is
    rebuilt to name its weights; a ``package.module:factory`` is imported only with
    ``trust_code`` (see :func:`sakd.models.registry.stored_names`).
    """
    if checkpoint not in CHECKPOINTS:
        raise SakdError(f"checkpoint must be 'best' or 'last', not {checkpoint!r}")
    run = Path(run_dir)
    if not run.is_dir():
        raise SakdError(f"run folder {str(run)!r} does not exist: give the output_dir of a run")
    path = run / "checkpoints" / f"{checkpoint}.pt"
    if not path.is_file():
        other = "last" if checkpoint == "best" else "best"
        raise SakdError(
            f"{str(path)!r} does not exist: the run has not finished an epoch yet"
            + (
                f" (try --checkpoint {other})"
                if (run / "checkpoints" / f"{other}.pt").is_file()
                else ""
            )
        )
    data = load_checkpoint(path)
    if data.get("format") != FORMAT or not isinstance(data.get("config"), dict):
        raise SakdError(f"{str(path)!r} is not a sakd checkpoint (no recorded config)")
    with nullcontext() if trust_code else stored_names(f"checkpoint {str(path)!r}"):
        state = export_state_dict(
            data["config"].get("model") or {}, extract_state_dict(data), str(path)
        )
    target = Path(out).expanduser()
    if target.is_dir():
        raise SakdError(f"--out {str(target)!r} is a folder: give a file name such as student.pt")
    atomic_write_bytes(target, lambda handle: torch.save(state, handle))
    return target


def export_state_dict(model_cfg: dict, state: dict, what: str) -> dict[str, torch.Tensor]:
    """``state`` (a staged student's weights) in the names of the module ``model_cfg`` describes."""
    from sakd.models import create_source_module
    from sakd.models.wrap import find_head, staged_to_source_state_dict

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
    num_classes = int(head_weight.shape[0])
    if ":" not in name:
        model = create_source_module(name, num_classes)
        model.load_weights(state, f"{what} for {name!r}")
        return model.export_state_dict()
    module = create_source_module(name, num_classes)
    head = model_cfg.get("head") or find_head(module)
    return staged_to_source_state_dict(state, module, head, f"{what} for {name!r}")
