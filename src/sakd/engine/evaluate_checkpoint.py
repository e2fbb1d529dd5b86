"""``sakd eval``: accuracy of a saved network on a dataset split."""

from __future__ import annotations

from typing import Any

from sakd._autoload import TRUST_HINT, stored_names
from sakd.config import apply_overrides, upgrade_renamed_keys, validate_config
from sakd.engine.build import build_model, load_test_split
from sakd.engine.checkpoint import extract_weights, resolve_path
from sakd.engine.evaluate import accuracy
from sakd.engine.rundir import TrainingCheckpoint
from sakd.engine.runtime import Runtime
from sakd.errors import SakdError


def evaluate_checkpoint(
    path: str, overrides: list[str], trust_code: bool = False
) -> dict[str, Any]:
    """Top-1/top-5 of the student in ``path`` on the configured test split.

    sakd checkpoints carry their config (override e.g. ``data.root`` or ``device``); other files
    (e.g. RepDistiller's ``{'model': state_dict}``, in its module names) need ``model.name=...
    data.name=...``. ``weights`` in the result says which layout the file was recognised as.
    ``sakd:<path>`` names a file shipped in the package (as for ``teacher.checkpoint``). A
    ``package.module:attr`` name the checkpoint holds is imported only when ``overrides`` name
    it again or ``trust_code`` is set (see :func:`sakd._autoload.stored_names`).
    """
    path = str(resolve_path(path))
    saved = TrainingCheckpoint.load(path)
    base = saved.config if saved.is_sakd else {}
    if base is None:
        raise SakdError(
            f"{path!r} claims to be a sakd checkpoint but holds no configuration mapping: "
            "say which network it holds with model.name=NAME (and data.name=...)"
        )
    named = [o.partition("=")[2] for o in overrides if o.startswith("model.name=")]
    if not base and not named:
        raise SakdError(
            f"{path!r} is not a sakd checkpoint: say which network it holds with model.name=NAME"
        )
    merged = apply_overrides(upgrade_renamed_keys(base), overrides)
    for key in ("teacher", "distiller"):
        merged.pop(key, None)
    how = TRUST_HINT + ", or give model.name={name} again"
    with stored_names(f"checkpoint {path!r}", named, how, trusted=trust_code):
        cfg = validate_config(merged, source=f"checkpoint {path!r}")
        runtime = Runtime.create(cfg.device, cfg.precision, cfg.channels_last)
        test_set = load_test_split(cfg)
        model = build_model(cfg.model, test_set.num_classes, int(test_set.image_size[-1]))
    state, container = extract_weights(saved.data)
    names = model.load_weights(state, f"checkpoint {path!r} for {cfg.model.name!r}")
    runtime.prepare_module(model)
    top1, top5 = accuracy(model, test_set, runtime, cfg.eval_batch_size)
    published = _published(cfg.data.name, cfg.model.name)
    return {
        "checkpoint": str(path),
        "weights": f"{container} in {names}",
        "model": cfg.model.name,
        "dataset": cfg.data.name,
        "test_size": len(test_set.labels),
        "test_top1": top1,
        "test_top5": top5,
        "epoch": saved.epoch,
        **(
            {}
            if published is None
            else {"published_top1": published.top1, "published_source": published.source}
        ),
    }


def _published(dataset: str, model: str):
    """The published test top-1 of ``model`` as a teacher on ``dataset`` (reference tables), if any."""
    from sakd.experiments.reference import published_teachers
    from sakd.models import canonical_name

    return published_teachers().get((dataset, canonical_name(model)))
