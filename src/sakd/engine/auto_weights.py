"""Loss weights measured at the start of a run: the ``auto:initial-share`` rule for β.

The published β of a feature distiller was tuned for the CIFAR ResNets of the paper; a feature
loss scales with the features' magnitude, channels and resolution, so on other networks the same
β can make the feature term hundreds of times the cross-entropy and drown it (AT's β = 1000 on a
small own CNN left the student 35 points below training it alone). For a pair that is not all-zoo
(:func:`sakd.config.weights.auto_weighted`), or with ``distiller.loss_weight=auto``, β is set so
that the feature term starts at a fixed fraction of the student's cross-entropy::

    β = AUTO_RATIO · w_ce · CE₀ / L₀

where CE₀ and L₀ are the unweighted cross-entropy and distiller loss (every spot selected) of the
untrained student, averaged over the first :data:`MEASURE_BATCHES` training batches of epoch 1
(the batches training then sees, augmentation included). Logit terms keep their published weights:
a KL between class distributions has the same scale on every network. Nothing of the run changes
by measuring (buffers and random generators are restored). The value is written to ``run.json``
(``resolved_weights``, source ``auto:initial-share``, with the measured losses), and a resumed run
reads it back from there instead of measuring again.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from sakd.config import RunConfig
from sakd.config.schema import AUTO
from sakd.config.weights import AUTO_KEY, AUTO_RULE, AUTO_SOURCE
from sakd.data import BatchSource, iterate_source
from sakd.engine.distributed import broadcast_from_main, on_main_rank
from sakd.engine.rundir import RunFolder
from sakd.engine.runtime import Runtime
from sakd.engine.training_tasks import DistillationTask
from sakd.errors import SakdError

# The feature term starts at this fraction of the (weighted) cross-entropy.
AUTO_RATIO = 0.5
# Batches of epoch 1 the initial losses are averaged over.
MEASURE_BATCHES = 4


def needs_measurement(cfg: RunConfig) -> bool:
    """True when the run's β is ``auto`` (measured here)."""
    return cfg.distiller is not None and cfg.distiller.loss_weight == AUTO


def initial_losses(
    task: DistillationTask, train_set: BatchSource, cfg: RunConfig, runtime: Runtime
) -> dict[str, float]:
    """The unweighted initial losses (``ce`` and each term) over the first training batches.

    Every rank measures on the same batches (the single-process order of epoch 1), so every rank
    gets the same values; torch's random generators are left as they were.
    """
    batches = iterate_source(
        train_set, cfg.batch_size, train=True, seed=cfg.seed, epoch=0, device=runtime.device
    )
    sums: dict[str, float] = {}
    count = 0
    devices = [runtime.device] if runtime.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for images, labels, index in batches:
            with runtime.autocast():
                losses = task.initial_losses(runtime.prepare_images(images), labels, index)
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            count += 1
            if count == MEASURE_BATCHES:
                break
    return {name: total / count for name, total in sums.items()}


def auto_beta(initial: dict[str, float], term: str, ce_weight: float) -> float:
    """β by the rule: ``AUTO_RATIO · ce_weight · CE₀ / L₀``; one line when it cannot be chosen."""
    reference = ce_weight * initial["ce"]
    value = initial[term]
    if not (math.isfinite(value) and value > 0 and math.isfinite(reference) and reference > 0):
        raise SakdError(
            f"cannot choose distiller.loss_weight by the {AUTO_RULE} rule: at the start the "
            f"{term} loss is {value:.3g} and the weighted cross-entropy {reference:.3g} (both must "
            "be positive and finite): set distiller.loss_weight yourself"
        )
    return AUTO_RATIO * reference / value


def _stored(run_dir: Path, cfg: RunConfig) -> dict[str, Any] | None:
    """The β a resumed run measured before (run.json), or None when the run starts afresh."""
    folder = RunFolder(run_dir)
    if not (cfg.resume and folder.checkpoint_path("last").is_file()):
        return None
    entry = folder.read_info().resolved_weights.get(AUTO_KEY)
    if entry is None or entry.get("source") != AUTO_SOURCE:
        return None
    value = entry.get("value")
    return entry if isinstance(value, float) and math.isfinite(value) and value >= 0 else None


def resolve_auto_weights(
    cfg: RunConfig,
    task: DistillationTask,
    facts: dict[str, Any],
    train_set: BatchSource,
    runtime: Runtime,
    run_dir: Path,
) -> str | None:
    """Measure (or, on resume, read back) an ``auto`` β, set it on the task and in ``facts``.

    Returns a line describing what was chosen (None when nothing is measured).
    """
    if not needs_measurement(cfg):
        return None
    assert cfg.distiller is not None
    term = task.terms[-1].name
    entry = broadcast_from_main(on_main_rank(lambda: _stored(run_dir, cfg)))
    if entry is None:
        initial = initial_losses(task, train_set, cfg, runtime)
        beta = auto_beta(initial, term, cfg.loss.ce_weight)
        entry = {"value": beta, "source": AUTO_SOURCE, "initial_losses": initial}
        how = "measured"
    else:
        how = "read back from run.json (resumed run)"
    task.set_term_weight(term, entry["value"])
    facts["resolved_weights"][AUTO_KEY] = entry
    initial = entry.get("initial_losses") or {}
    losses = ", ".join(f"{k} {v:.4g}" for k, v in initial.items())
    return (
        f"distiller.loss_weight {entry['value']:.4g} ({AUTO_SOURCE}, {how}: {term} starts at "
        f"{AUTO_RATIO:g} x the cross-entropy; initial unweighted losses {losses})"
    )
