"""``sakd eval``: accuracy of a saved network on a dataset split."""

from __future__ import annotations

from typing import Any

from sakd.config import apply_overrides, upgrade_renamed_keys, validate_config
from sakd.engine.build import build_model, load_test_split
from sakd.engine.checkpoint import load_weights_strict
from sakd.engine.evaluate import accuracy
from sakd.engine.rundir import TrainingCheckpoint
from sakd.engine.runtime import Runtime
from sakd.errors import SakdError


def evaluate_checkpoint(path: str, overrides: list[str]) -> dict[str, Any]:
    """Top-1/top-5 of the student in ``path`` on the configured test split.

    sakd checkpoints carry their config (override e.g. ``data.root`` or ``device``); other files
    (e.g. RepDistiller's ``{'model': state_dict}``) need ``model.name=... data.name=...``.
    """
    saved = TrainingCheckpoint.load(path)
    base = saved.config if saved.is_sakd else {}
    if base is None:
        raise SakdError(
            f"{path!r} claims to be a sakd checkpoint but holds no configuration mapping: "
            "say which network it holds with model.name=NAME (and data.name=...)"
        )
    named = any(o.startswith("model.name=") for o in overrides)
    if not base and not named:
        raise SakdError(
            f"{path!r} is not a sakd checkpoint: say which network it holds with model.name=NAME"
        )
    merged = apply_overrides(upgrade_renamed_keys(base), overrides)
    for key in ("teacher", "distiller"):
        merged.pop(key, None)
    model = merged.get("model")
    if isinstance(model, dict) and model.get("stages") is not None and not named:
        # A user module is imported (its code runs) only when the user names it here.
        raise SakdError(
            f"{path!r} was trained on the user model {model.get('name')!r}: sakd eval imports a "
            "user module only when you name it, so add model.name=package.module:factory"
        )
    cfg = validate_config(merged, source=f"checkpoint {path!r}")
    runtime = Runtime.create(cfg.device, cfg.precision, cfg.channels_last)
    test_set = load_test_split(cfg)
    model = build_model(cfg.model, test_set.num_classes, int(test_set.image_size[-1]))
    load_weights_strict(model, saved.state_dict(), f"checkpoint {path!r} for {cfg.model.name!r}")
    runtime.prepare_module(model)
    top1, top5 = accuracy(model, test_set, runtime, cfg.eval_batch_size)
    return {
        "checkpoint": str(path),
        "model": cfg.model.name,
        "dataset": cfg.data.name,
        "test_size": len(test_set.labels),
        "test_top1": top1,
        "test_top5": top5,
        "epoch": saved.epoch,
    }
