"""Run a configuration end to end: validate and build everything, then train into ``output_dir``.

Started by ``torchrun``, every process runs this same function on its own rank (see
:mod:`sakd.engine.distributed`); only rank 0 touches ``output_dir``.
"""

from __future__ import annotations

import copy
import dataclasses
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sakd._version import __version__
from sakd.config import OBJECT_PREFIX, RunConfig, config_differences, validate_config
from sakd.data import BatchSource, ImageSet, StreamSet
from sakd.data.contract import InputContract
from sakd.engine.auto_weights import resolve_auto_weights
from sakd.engine.build import build_task, load_data
from sakd.engine.distributed import broadcast_from_main, join_launch, on_main_rank
from sakd.engine.evaluate import accuracy
from sakd.engine.faults import fault_point
from sakd.engine.rundir import (
    DIVERGED_NAME,
    METRICS_NAME,
    PRETRAIN_NAME,
    SUMMARY_NAME,
    RunDirLock,
    RunFolder,
    RunInfo,
    RunSummary,
    lock_run_dir,
    refused_changes,
)
from sakd.engine.runtime import Runtime, seed_everything
from sakd.engine.trainer import Trainer
from sakd.engine.training_tasks import DistillationTask
from sakd.errors import SakdError


@dataclasses.dataclass
class CompleteRunSummary(RunSummary):
    """The summary of a run that was already complete when started again: nothing ran."""


def run(
    cfg: RunConfig,
    data: tuple[BatchSource, BatchSource] | None = None,
    modules: dict[str, nn.Module] | None = None,
) -> RunSummary:
    """Train the network (or distil the student) that ``cfg`` describes; returns its summary.

    All inputs are checked before ``output_dir`` is touched. The run folder then holds
    ``config.yaml`` (resolved), ``run.json`` (facts about the run: the precision, memory format and
    number of ranks actually used, the spots by name, the resolved loss weights with their sources,
    and its provenance — sakd version, git commit of a checkout, command line, torch / CUDA
    versions, device name), ``metrics.jsonl``, TensorBoard files and ``checkpoints/{last,best}.pt``
    (+ ``best.pt.sha256``). On a GPU the whole dataset is moved to the device once and batched and
    augmented there (a streamed split is read batch by batch). ``data``: (train, test) sources to
    use instead of the ones ``cfg.data`` names (e.g. from :func:`sakd.data.from_dataset`).
    ``modules``: ``nn.Module`` objects to train / distil from instead of building ``cfg.model`` /
    ``cfg.teacher`` by name (``{"model": student, "teacher": teacher}``, either optional; see
    :func:`sakd.engine.build.build_model`): the student object itself is trained (its parameters
    are the staged net's), the teacher object is frozen (eval mode, no gradients) while the run trains and given back as it
    came. This is what :func:`sakd.train` and :func:`sakd.distill` call.

    The folder is locked while the run uses it (a second run on it is refused). A folder that
    already holds the complete run (``summary.json``, same configuration) is left exactly as it
    is and its summary returned as a :class:`CompleteRunSummary`.
    """
    if cfg.teacher is None and cfg.distiller is not None:
        raise SakdError("a distiller needs a teacher")
    device = join_launch(cfg.device)
    if not (cfg.baseline and cfg.teacher is not None):
        return _run(cfg, device, data, modules)
    student = (modules or {}).get("model")
    fresh = None if student is None else copy.deepcopy(student)  # its weights before distilling
    summary = _run(cfg, device, data, modules)
    alone = _run(baseline_config(cfg), device, data, None if fresh is None else {"model": fresh})
    summary = dataclasses.replace(
        summary, baseline_best_top1=alone.best_top1, baseline_last_top1=alone.last_top1
    )
    on_main_rank(lambda: _record_baseline(Path(cfg.output_dir), summary))
    on_main_rank(lambda: print(describe_gain(summary, alone), flush=True))
    return summary


def _record_baseline(run_dir: Path, summary: RunSummary) -> None:
    """Add the student alone's top-1s to the distilled run's ``summary.json`` (when not there)."""
    folder = RunFolder(run_dir)
    if not folder.holds_summary(summary):
        lock = lock_run_dir(run_dir)
        try:
            folder.write_summary(summary)
        finally:
            lock.release()


BASELINE_DIR = "baseline"


def baseline_config(cfg: RunConfig) -> RunConfig:
    """The student alone with the distillation run's budget and seed, in ``output_dir/baseline``."""
    values = cfg.model_dump(mode="json", exclude={"teacher", "distiller", "loss", "spots"})
    values.update(baseline=False, output_dir=str(Path(cfg.output_dir) / BASELINE_DIR))
    values["name"] = f"{cfg.name}-baseline"
    return validate_config(values, source=f"baseline of {cfg.output_dir}", stored=True)


def describe_gain(distilled: RunSummary, alone: RunSummary) -> str:
    """One line: the student alone against the distilled one, and the gain of distilling."""
    return (
        f"baseline (student alone, same budget and seed): best top-1 {alone.best_top1:.2f}, last "
        f"{alone.last_top1:.2f} | distilled: best {distilled.best_top1:.2f}, last "
        f"{distilled.last_top1:.2f} | gain from distilling: {distilled.best_top1 - alone.best_top1:+.2f} "
        f"points (best), {distilled.last_top1 - alone.last_top1:+.2f} (last)"
    )


def _run(
    cfg: RunConfig,
    device: str,
    data: tuple[BatchSource, BatchSource] | None = None,
    modules: dict[str, nn.Module] | None = None,
) -> RunSummary:
    seed_everything(cfg.seed)
    runtime = Runtime.create(device, cfg.precision, cfg.channels_last, cfg.compile)
    train_set, test_set = load_data(cfg) if data is None else data
    if runtime.device.type != "cpu":
        train_set, test_set = train_set.to(runtime.device), test_set.to(runtime.device)
    task, facts = build_task(cfg, train_set, runtime, modules)
    try:
        return _run_task(cfg, runtime, task, facts, train_set, test_set)
    finally:
        if isinstance(task, DistillationTask):
            task.release_teacher()


def _run_task(cfg, runtime, task, facts, train_set, test_set) -> RunSummary:
    # After building: the builders probe the student's shapes, which must not trigger compilation.
    runtime.compile_network(task.eval_model)
    run_dir = Path(cfg.output_dir)
    before = on_main_rank(lambda: _entries(run_dir))
    lock = on_main_rank(lambda: _open_output_dir(run_dir, cfg, facts.get("teacher_sha256")))
    try:
        complete = broadcast_from_main(on_main_rank(lambda: _complete_summary(run_dir, cfg)))
        if complete is not None:
            return complete
        return _train(cfg, runtime, run_dir, task, facts, train_set, test_set)
    except BaseException:
        on_main_rank(lambda: _remove_unfinished(run_dir, before))
        raise
    finally:
        if lock is not None:
            lock.release()


def _train(cfg, runtime, run_dir, task, facts, train_set, test_set) -> RunSummary:
    if cfg.teacher is not None:
        teacher_top1, _ = accuracy(task.teacher, test_set, runtime, cfg.eval_batch_size)
        facts["teacher_top1"] = teacher_top1
        facts.update(_published_teacher(cfg))
    chosen = resolve_auto_weights(cfg, task, facts, train_set, runtime, run_dir)
    info = {
        **facts,
        **provenance(),
        "device": str(runtime.device),
        "device_name": _device_name(runtime.device),
        "precision": runtime.precision,
        "channels_last": runtime.channels_last,
        "compile": runtime.compile,
        "data_loader": "stream" if isinstance(train_set, StreamSet) else "memory",
        "data_on_device": isinstance(train_set, ImageSet)
        and train_set.images.device.type == runtime.device.type,
        "world_size": runtime.world_size,
        "batch_size_per_rank": cfg.batch_size,
        "global_batch_size": cfg.batch_size * runtime.world_size,
        "lr_scaling": cfg.lr_scaling,
        "lr_scale": runtime.world_size if cfg.lr_scaling == "linear" else 1,
        "train_size": len(train_set),
        "test_size": len(test_set),
        "num_classes": train_set.num_classes,
        "input": InputContract.of_source(test_set).to_dict(),
    }
    if isinstance(task, DistillationTask):
        info["spots"] = task.spot_facts()
    on_main_rank(lambda: _prepare_run_dir(cfg, run_dir, info))
    on_main_rank(lambda: print(describe_run(cfg, info), flush=True))
    if chosen is not None:
        on_main_rank(lambda: print(chosen, flush=True))
    trainer = Trainer(cfg, task, train_set, test_set, runtime, run_dir)
    summary = trainer.fit()
    fault_point("finish")
    on_main_rank(lambda: _finish_run_dir(run_dir, summary))
    return summary


def _open_output_dir(
    run_dir: Path, cfg: RunConfig, teacher_sha256: str | None = None
) -> RunDirLock:
    """Check ``output_dir``, lock it, and remove the temporary files of a killed earlier run."""
    if run_dir.exists() and not run_dir.is_dir():
        raise SakdError(f"output_dir {str(run_dir)!r} is a file: choose a folder path")
    lock = lock_run_dir(run_dir)
    try:
        RunFolder(run_dir).open_files()
        _check_output_dir(run_dir, cfg)
        _check_teacher_object(run_dir, cfg, teacher_sha256)
    except BaseException:
        lock.release()
        raise
    return lock


def _entries(run_dir: Path) -> set[str] | None:
    """The names in ``run_dir`` before this run touches it (None: there is no such folder)."""
    return {entry.name for entry in run_dir.iterdir()} if run_dir.is_dir() else None


def _remove_unfinished(run_dir: Path, before: set[str] | None) -> None:
    """A run that failed before its first checkpoint: remove what it wrote into ``run_dir``.

    Nothing is left half-made (a config.yaml and run.json describing no checkpoint); what was
    there before stays. A run with a checkpoint or a divergence record keeps everything: the
    next start resumes from it.
    """
    if (run_dir / "checkpoints" / "last.pt").exists() or (run_dir / DIVERGED_NAME).exists():
        return
    if before is None:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for entry in run_dir.iterdir():
        if entry.name not in before:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _complete_summary(run_dir: Path, cfg: RunConfig) -> CompleteRunSummary | None:
    """The stored summary when ``run_dir`` already holds this complete run (and resume is on).

    A damaged summary counts as none: the run is finished again from ``checkpoints/last.pt``.
    Its ``best.pt`` is checked (present, undamaged, the best epoch): rebuilt from ``last.pt`` when
    the last epoch was the best, one line otherwise.
    """
    folder = RunFolder(run_dir)
    summary = folder.read_summary() if cfg.resume else None
    if summary is None:
        return None
    rebuilt = folder.repair_finished_best(summary.best_epoch)
    if rebuilt is not None:
        print(rebuilt, flush=True)
    return CompleteRunSummary(**summary.__dict__)


def _prepare_run_dir(cfg: RunConfig, run_dir: Path, info: dict[str, Any]) -> None:
    if not cfg.resume:
        _clear_previous_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    folder = RunFolder(run_dir)
    folder.write_config(cfg)
    folder.write_info(RunInfo(info))


def _finish_run_dir(run_dir: Path, summary: RunSummary) -> None:
    folder = RunFolder(run_dir)
    folder.certify_best()
    folder.write_summary(summary)


def _check_output_dir(run_dir: Path, cfg: RunConfig) -> None:
    folder = RunFolder(run_dir)
    if cfg.resume and folder.checkpoint_path("last").is_file() and folder.has_config():
        # Refuse before config.yaml is rewritten, so the folder keeps describing its checkpoints.
        saved = folder.read_config_mapping()
        changed = refused_changes(run_dir, config_differences(saved, cfg))
        if changed:
            raise SakdError(
                f"output_dir {str(run_dir)!r} holds a run with a different configuration "
                f"({', '.join(changed)} differ): use another output_dir, or resume=false to start "
                "over in this one"
            )


def _check_teacher_object(run_dir: Path, cfg: RunConfig, digest: str | None) -> None:
    """Resuming with a teacher object: it must hold the weights the run started from.

    config.yaml records a module object by its class only, so its weights are compared through
    the state-dict digest that run.json recorded (``teacher_sha256``).
    """
    teacher = cfg.teacher
    if not cfg.resume or teacher is None or digest is None or teacher.checkpoint is not None:
        return
    folder = RunFolder(run_dir)
    if not teacher.name.startswith(OBJECT_PREFIX) or not folder.checkpoint_path("last").is_file():
        return
    recorded = folder.read_info().teacher_sha256
    if recorded is not None and recorded != digest:
        raise SakdError(
            f"output_dir {str(run_dir)!r} holds a run distilled from a teacher with other weights "
            f"(state-dict SHA-256 {recorded[:12]}…, this one {digest[:12]}…): pass the same "
            "teacher, use another output_dir, or resume=false to start over in this one"
        )


def _clear_previous_run(run_dir: Path) -> None:
    """With ``resume=false``: remove what an earlier run left, so this one starts from scratch."""
    try:
        for name in (METRICS_NAME, PRETRAIN_NAME, SUMMARY_NAME, DIVERGED_NAME):
            (run_dir / name).unlink(missing_ok=True)
        for folder in ("checkpoints", "tb"):
            if (run_dir / folder).is_dir():
                shutil.rmtree(run_dir / folder)
    except OSError as exc:
        raise SakdError(
            f"cannot clear the earlier run in {str(run_dir)!r} for resume=false ({exc.strerror}): "
            "make the folder writable or choose another output_dir"
        ) from None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def provenance() -> dict[str, Any]:
    """Where a run comes from: sakd version, git commit (of a checkout), command line, torch / CUDA."""
    return {
        "sakd_version": __version__,
        **_git_state(Path(__file__).resolve().parents[1]),
        "command": shlex.join(sys.argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


def _git_state(folder: Path) -> dict[str, Any]:
    """``git_commit`` and ``git_dirty`` of the checkout holding ``folder``; None when there is none."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def _published_teacher(cfg: RunConfig) -> dict[str, Any]:
    """The teacher's published test top-1 and its source (reference tables), for run.json."""
    from sakd.experiments.reference import published_teachers
    from sakd.models import canonical_name

    assert cfg.teacher is not None
    found = published_teachers().get((cfg.data.name, canonical_name(cfg.teacher.name)))
    if found is None:
        return {}
    return {"teacher_published_top1": found.top1, "teacher_published_source": found.source}


def _weight(info: dict[str, Any], configured: float | str | None) -> str:
    """β as the run uses it: the configured number, or the measured one (``auto``)."""
    if isinstance(configured, float):
        return f"{configured:g}"
    value = info.get("resolved_weights", {}).get("distiller.loss_weight", {}).get("value")
    return f"{value:.4g} (auto)" if isinstance(value, float) else str(configured)


def describe_run(cfg: RunConfig, info: dict[str, Any]) -> str:
    """The resolved configuration's key facts, printed when a run starts."""
    if cfg.teacher is None:
        what = f"train {cfg.model.name}"
    else:
        distiller = cfg.distiller.name
        spots = ", ".join(spot["name"] for spot in info.get("spots", []))
        start = ""
        if cfg.spots.mode.routed:
            start = ", homogeneous start" if cfg.spots.homogeneous else ", 50/50 start"
        published = info.get("teacher_published_top1")
        paper = "" if published is None else f", published {published:.2f}"
        what = (
            f"distill {cfg.teacher.name} (top-1 {info.get('teacher_top1', float('nan')):.2f}"
            f"{paper}) -> "
            f"{cfg.model.name} with {distiller} "
            f"(ce_weight {cfg.loss.ce_weight:g}, kd_weight {cfg.loss.kd_weight:g}, "
            f"loss_weight {_weight(info, cfg.distiller.loss_weight)}), "
            f"spots {cfg.spots.mode}{start} at {spots}"
        )
    facts = [
        f"sakd {__version__}: {what}",
        f"{cfg.data.name} {info['train_size']} train / {info['test_size']} test images",
        f"{cfg.epochs} epochs, batch {cfg.batch_size} x {info['world_size']} rank(s), lr {cfg.lr:g}, "
        f"seed {cfg.seed}",
        f"{info['device']} ({info['device_name']}), {info['precision']}",
        f"-> {cfg.output_dir}",
    ]
    line = " | ".join(facts)
    if "teacher_weights" in info:
        line += f"\nteacher {cfg.teacher.name}: {info['teacher_weights']}"
    return line
