"""The training loop: phases of epochs, one backward per step, evaluation, checkpoints, resume.

It steps whatever named losses and parameter groups a :class:`~sakd.engine.task_contract.Task` gives it and
knows no distiller. Every epoch of the main phase writes one
:class:`~sakd.engine.records.EpochRecord` (1-based epoch, named spot rates) to ``metrics.jsonl``
and TensorBoard, prints it as one line (also with ``progress=false``), and atomically rewrites
``checkpoints/best.pt`` (on a new best test top-1), then ``last.pt``. A run started again with the
same configuration resumes from ``last.pt`` at the next epoch and ends with the same weights as an
uninterrupted run (data order and augmentation are a pure function of seed and epoch; every RNG
state, and the optimisers', schedules' and EMA's states, are in the checkpoint), however it was
killed. Optimisers, per-iteration lr schedules and the student's moving average come from
:mod:`sakd.engine.optim`; with ``ema.decay`` > 0 the average is what is evaluated. Training stops
with one line when a loss is not finite or the weights diverged (:mod:`sakd.engine.divergence`),
before anything is saved; a resume may then change ``lr`` (see :mod:`sakd.engine.rundir` and
``docs/runs.md``). At resume ``best.pt`` is checked and, when it can be, rebuilt from ``last.pt``.

Under ``torchrun`` (see :mod:`sakd.engine.distributed`) each rank trains on its shard of every
epoch through ``DistributedDataParallel``; the epoch's losses and statistics are summed over the
ranks, evaluation is sharded, and rank 0 alone writes metrics and checkpoints while the others
wait. Checkpoints hold the unwrapped modules, so a run resumes on any number of ranks.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from sakd.config import RunConfig, config_differences
from sakd.data import BatchSource, iterate_source, num_batches
from sakd.engine.checkpoint import load_checkpoint, load_weights_strict, save_checkpoint
from sakd.engine.distributed import (
    DataParallelPhase,
    average_batchnorm_statistics,
    broadcast_from_main,
    on_main_rank,
)
from sakd.engine.divergence import module_divergence
from sakd.engine.evaluate import accuracy
from sakd.engine.faults import fault_point
from sakd.engine.meter import EpochMeter
from sakd.engine.metrics import MetricsLog
from sakd.engine.optim import (
    Optimisation,
    ema_state,
    fast_forward,
    load_ema_state,
    make_ema,
    make_optimisation,
    min_lr_fraction,
)
from sakd.engine.records import EpochRecord
from sakd.engine.rundir import (
    PRETRAIN_NAME,
    RunFolder,
    RunSummary,
    clear_divergence,
    refused_changes,
    write_divergence,
)
from sakd.engine.runtime import Runtime, rng_state, set_rng_state
from sakd.engine.task_contract import Phase, StepResult, Task
from sakd.errors import SakdError

NAN_CHECK_EVERY = 50


def train_step(
    runtime: Runtime,
    phase: Phase,
    optimisation: Optimisation,
    images: Tensor,
    labels: Tensor,
    index: Tensor,
    epoch: int,
) -> StepResult:
    """One optimisation step: forward the phase's step, ONE backward of the summed losses, step all."""
    images = runtime.prepare_images(images)
    with runtime.autocast():
        result = phase.step(images, labels, index, epoch)
    total = sum(result.losses.values())
    optimisation.zero_grad()
    total.backward()
    optimisation.step()
    return result


class Trainer:
    """Runs a task's phases on a dataset with the settings of a :class:`RunConfig`."""

    def __init__(
        self,
        config: RunConfig,
        task: Task,
        train_set: BatchSource,
        test_set: BatchSource,
        runtime: Runtime,
        run_dir: Path,
    ) -> None:
        self.config = config
        self.task = task
        self.train_set = train_set
        self.test_set = test_set
        self.runtime = runtime
        self.run_dir = run_dir
        self.ckpt_dir = run_dir / "checkpoints"
        self.best_top1 = -1.0
        self.best_epoch = -1
        self.is_main = runtime.rank == 0
        self.lr_scale = runtime.world_size if config.lr_scaling == "linear" else 1
        # What the checkpoints carry besides weights: the last evaluation (for the summary of a
        # run that is finished on a later start), training seconds so far, where last.pt is.
        self._last_eval = [math.nan, math.nan]
        self._seconds_before = 0.0
        self._saved_at: tuple[str, int] | None = None
        self._config_changes: list[dict[str, Any]] = []
        # The student's moving average (ema.decay > 0), made at the start of the main phase.
        self.ema: torch.optim.swa_utils.AveragedModel | None = None

    # ------------------------------------------------------------------ public
    def fit(self) -> RunSummary:
        """Train every phase to the end (resuming from ``last.pt`` when allowed and present)."""
        started = time.perf_counter()
        self._started = started
        phases = self.task.phases(self.config.epochs)
        self._num_phases = len(phases)
        self._phase_names = [p.name for p in phases]
        phase_index, epoch, optimizers = 0, 0, None
        resume_from = self.ckpt_dir / "last.pt"
        saved = self._read_checkpoint(resume_from) if self.config.resume else None
        if saved is not None:
            phase_index, epoch, optimizers = self._restore(saved, resume_from, phases)
            on_main_rank(lambda: self._repair_best(saved))
        metrics = MetricsLog(self.run_dir) if self.is_main else None
        pre_metrics = (
            MetricsLog(self.run_dir, PRETRAIN_NAME, tensorboard=False) if self.is_main else None
        )
        if metrics is not None and phase_index == len(phases) - 1:
            metrics.truncate_after(epoch)
        if pre_metrics is not None:  # records of epochs after last.pt would be written again
            names = tuple(self._phase_names)
            pre_metrics.truncate_after(epoch, names[phase_index], earlier=names[:phase_index])
        try:
            for index in range(phase_index, len(phases)):
                if optimizers is None:
                    optimizers = self._optimisation(phases[index])
                if index == len(phases) - 1 and self.ema is None:
                    self.ema = self._new_ema()
                with self._parallel(phases[index]) as phase:
                    for ep in range(epoch, phase.epochs):
                        record = self._train_epoch(phase, index, ep, optimizers)
                        average_batchnorm_statistics(self.task)
                        if self.ema is not None:  # its BN statistics too: equal on every rank
                            average_batchnorm_statistics(self.ema)
                        self._check_parameters(phase, ep)
                        log = pre_metrics
                        if phase.evaluate:
                            fault_point("evaluate")
                            top1, top5 = self.evaluate()
                            record.test_top1, record.test_top5 = top1, top5
                            self._last_eval = [top1, top5]
                            if top1 > self.best_top1:
                                self.best_top1, self.best_epoch = top1, ep
                            record.best_top1 = self.best_top1
                            log = metrics if index == len(phases) - 1 else pre_metrics
                        if log is not None:
                            log.write(record)
                        if self.is_main:
                            print(record.console_line(phase.epochs), flush=True)
                        self._save(
                            index,
                            ep + 1,
                            optimizers,
                            new_best=phase.evaluate and self.best_epoch == ep,
                        )
                epoch, optimizers = 0, None
        finally:
            if metrics is not None:
                metrics.close()
        return RunSummary(
            best_top1=self.best_top1,
            best_epoch=self.best_epoch + 1,
            last_top1=self._last_eval[0],
            last_top5=self._last_eval[1],
            epochs=self.config.epochs,
            seconds=self._seconds(),
        )

    def evaluate(self) -> tuple[float, float]:
        """Top-1 and top-5 accuracy (%) of the evaluated model (the EMA when on) on the test split."""
        model = self.ema.module if self.ema is not None else self.task.eval_model
        return accuracy(model, self.test_set, self.runtime, self.config.eval_batch_size)

    # ----------------------------------------------------------------- helpers
    def _parallel(self, phase: Phase) -> contextlib.AbstractContextManager[Phase]:
        """The phase as stepped on this launch: through DDP when there are several ranks."""
        if self.runtime.world_size == 1:
            return contextlib.nullcontext(phase)
        return DataParallelPhase(self.task, phase)

    def _optimisation(self, phase: Phase) -> Optimisation:
        """The phase's optimisers and per-iteration schedules (:mod:`sakd.engine.optim`)."""
        cfg = self.config
        return make_optimisation(
            phase,
            cfg.schedule,
            lr_scale=self.lr_scale,
            steps_per_epoch=self._steps_per_epoch(),
            min_lr_fraction=min_lr_fraction(cfg.schedule, cfg.lr),
        )

    def _steps_per_epoch(self) -> int:
        """Iterations of one epoch on each rank (what the schedules count)."""
        world_size = self.runtime.world_size
        return num_batches(len(self.train_set), self.config.batch_size, world_size=world_size)

    def _new_ema(self) -> torch.optim.swa_utils.AveragedModel | None:
        decay = self.config.ema.decay
        return make_ema(self.task.eval_model, decay) if decay > 0 else None

    def _show_progress(self) -> bool:
        """A bar on rank 0 when ``progress`` is true, or ``auto`` and stderr is a terminal."""
        if not self.is_main or self.config.progress is False:
            return False
        return self.config.progress is True or sys.stderr.isatty()

    def _train_epoch(
        self, phase: Phase, phase_index: int, epoch: int, optimizers: Optimisation
    ) -> EpochRecord:
        lrs = optimizers.lrs()
        self.task.train()
        cfg = self.config
        runtime = self.runtime
        batches = iterate_source(
            self.train_set,
            cfg.batch_size,
            train=True,
            seed=cfg.seed,
            epoch=phase.data_key + epoch,
            device=runtime.device,
            rank=runtime.rank,
            world_size=runtime.world_size,
        )
        meter = EpochMeter(runtime.device)
        bar = tqdm(
            total=len(self.train_set),
            unit="img",
            unit_scale=False,
            leave=False,
            disable=not self._show_progress(),
            desc=f"{phase.name} {epoch + 1}/{phase.epochs}",
        )
        start = time.perf_counter()
        step = -1
        for step, (images, labels, index) in enumerate(batches):
            result = train_step(self.runtime, phase, optimizers, images, labels, index, epoch)
            if self.ema is not None:  # made at the start of the main phase only
                self.ema.update_parameters(self.task.eval_model)
            fault_point("step")
            meter.add(result, labels.numel())
            if (step + 1) % NAN_CHECK_EVERY == 0:
                self._check_finite(meter, phase, epoch, step + 1)
            bar.update(labels.numel() * runtime.world_size)
        bar.close()
        self._check_finite(meter, phase, epoch, step + 1)
        seconds = time.perf_counter() - start
        means = meter.means()
        rates = means.stats.pop("spot_rates", None)
        spot_rates = {}
        if rates is not None:
            names = self.task.spot_names
            if len(names) != rates.numel():
                raise SakdError(
                    f"the task names {len(names)} spots but its steps report {rates.numel()} "
                    "spot rates: make Task.spot_names match the weights' columns"
                )
            spot_rates = dict(zip(names, rates.tolist(), strict=True))
        return EpochRecord(
            epoch=epoch + 1,
            phase=phase.name,
            lr=lrs.get("student", next(iter(lrs.values()), 0.0)),
            lrs=lrs,
            losses=means.losses,
            spot_rates=spot_rates,
            stats={name: float(value) for name, value in means.stats.items()},
            images_per_sec=means.seen / seconds if seconds > 0 else 0.0,
            epoch_seconds=seconds,
        )

    def _check_finite(self, meter: EpochMeter, phase: Phase, epoch: int, steps: int) -> None:
        name = meter.non_finite_loss()
        if name is not None:
            self._diverged(
                f"loss {name!r} is not finite (NaN/inf) within {steps} steps", phase, epoch
            )

    def _check_parameters(self, phase: Phase, epoch: int) -> None:
        """Stop before saving when a checkpointed module's weights diverged (:mod:`.divergence`)."""
        problem = module_divergence(self.task.checkpoint_modules(), self.config.weight_limit)
        if problem is not None:
            self._diverged(problem, phase, epoch)

    def _diverged(self, what: str, phase: Phase, epoch: int) -> None:
        """Raise the divergence error (after marking the run folder, so a resume may change lr)."""
        lower = f"lr={self.config.lr / 10:g}"
        if self._saved_at is None:
            good = "no checkpoint was saved yet"
            how = f"run the same command again with a lower learning rate (e.g. {lower})"
        else:
            name, done = self._saved_at
            good = f"checkpoints/last.pt (after {name} epoch {done}) holds the last healthy weights"
            how = (
                f"resume from it with a lower learning rate: the same command with {lower} "
                "(a changed lr or precision is accepted after a divergence; if it diverges "
                "again, start over with resume=false and a lower lr)"
            )
        if self.is_main:
            write_divergence(
                self.run_dir,
                {
                    "phase": phase.name,
                    "epoch": epoch,
                    "what": what,
                    "lr": self.config.lr,
                    "precision": self.config.precision,
                    "last_good_checkpoint": None
                    if self._saved_at is None
                    else "checkpoints/last.pt",
                },
            )
        fp32 = "" if self.runtime.precision == "fp32" else "use precision=fp32, or "
        raise SakdError(
            f"training diverged in {phase.name} epoch {epoch + 1}: {what}; {good}; {how}, or "
            f"{fp32}check the data"
        )

    def _seconds(self) -> float:
        """Training seconds of this run over all its starts."""
        return self._seconds_before + time.perf_counter() - self._started

    def _payload(self, phase_index: int, epoch: int, optimizers) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(mode="json"),
            "phase_index": phase_index,
            "epoch": epoch,
            "modules": {k: m.state_dict() for k, m in self.task.checkpoint_modules().items()},
            **optimizers.state_dict(),
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "rng": rng_state(),
            "last_eval": list(self._last_eval),
            "seconds": self._seconds(),
            "config_changes": list(self._config_changes),
            **({"ema": ema_state(self.ema)} if self.ema is not None else {}),
        }

    def _save(self, phase_index: int, epoch: int, optimizers, new_best: bool) -> None:
        """Rank 0 writes ``last.pt`` (and ``best.pt``); the other ranks wait for it."""

        # best.pt first: a kill between the two writes leaves last.pt one epoch behind, and
        # the resumed run trains that epoch again and rewrites best.pt with the same weights.
        def write() -> None:
            payload = self._payload(phase_index, epoch, optimizers)
            if new_best:
                save_checkpoint(self.ckpt_dir / "best.pt", payload)
                fault_point("between_best_and_last")
            save_checkpoint(self.ckpt_dir / "last.pt", payload)
            clear_divergence(self.run_dir)

        on_main_rank(write)
        self._saved_at = (self._phase_names[phase_index], epoch)

    def _repair_best(self, saved: dict[str, Any]) -> None:
        """Check ``best.pt`` at resume; rewrite it from last.pt when last.pt is the best epoch.

        A ``best.pt`` that is missing, damaged or stale (left by a kill between the two writes of
        an older sakd, which wrote last.pt first) is rebuilt from ``saved`` when that is the best
        epoch; when it is not, one line says best.pt is lost (before any epoch is trained).
        """
        phase_index, epoch = int(saved["phase_index"]), int(saved["epoch"])
        best_epoch = int(saved["best_epoch"])
        if best_epoch < 0:  # nothing evaluated yet: no best.pt to expect
            return
        last_is_best = phase_index == self._num_phases - 1 and best_epoch == epoch - 1
        folder = RunFolder(self.run_dir)
        # best.pt may be an epoch ahead of last.pt (a kill between the two writes): any epoch
        # is sound then, the resumed run rewrites it.
        problem = folder.best_problem(epoch=epoch if last_is_best else None)
        if problem is None:
            return
        if not last_is_best:
            raise folder.best_lost(problem, best_epoch + 1, epoch)
        print(folder.rebuild_best(saved, problem, certify=False), flush=True)

    def _read_checkpoint(self, path: Path) -> dict[str, Any] | None:
        """Rank 0's ``last.pt`` (None when absent) on every rank, its tensors on the CPU."""

        def read() -> dict[str, Any] | None:
            return load_checkpoint(path) if path.is_file() else None

        return broadcast_from_main(on_main_rank(read))

    def _restore(self, data: dict[str, Any], path: Path, phases: list[Phase]):
        _check_resumable(data, path, [p.epochs for p in phases])
        changed = config_differences(data["config"], self.config)
        refused = refused_changes(self.run_dir, changed)
        if refused:
            raise SakdError(
                f"{path} was written with a different configuration ({', '.join(refused)} differ): "
                "use another output_dir, or resume=false to start over in this one"
            )
        if changed:  # allowed after a divergence: recorded in every later checkpoint
            old = data["config"]
            new = self.config.model_dump(mode="json")
            self._config_changes.append(
                {
                    "at_epoch": int(data["epoch"]),
                    "phase_index": int(data["phase_index"]),
                    **{key: [old.get(key), new.get(key)] for key in changed},
                }
            )
        modules = self.task.checkpoint_modules()
        if set(data["modules"]) != set(modules):
            raise SakdError(
                f"{path} holds modules {sorted(data['modules'])}, expected {sorted(modules)}: "
                "it is not this run's checkpoint; use another output_dir or resume=false"
            )
        for name, module in modules.items():
            load_weights_strict(module, data["modules"][name], f"checkpoint {path} ({name})")
        problem = module_divergence(modules, self.config.weight_limit)
        if problem is not None:  # written by an older sakd, which saved diverging weights
            raise SakdError(
                f"{path} holds diverged weights ({problem}): there is no healthy checkpoint to "
                f"resume from; start over with resume=false and a lower learning rate (e.g. "
                f"lr={self.config.lr / 10:g})"
            )
        phase_index, epoch = int(data["phase_index"]), int(data["epoch"])
        if epoch >= phases[phase_index].epochs and phase_index + 1 < len(phases):
            phase_index, epoch = phase_index + 1, 0
        optimizers = self._optimisation(phases[phase_index])
        try:
            if epoch > 0:
                self._restore_optimisation(optimizers, data, epoch)
            if phase_index == len(phases) - 1:
                self.ema = self._new_ema()
                if self.ema is not None and epoch > 0:
                    load_ema_state(self.ema, data["ema"])
            set_rng_state(data["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            raise SakdError(
                f"{path} holds optimizer, schedule, EMA or random-generator states that do not "
                f"fit this run ({type(exc).__name__}): resume=false starts the run over"
            ) from None
        self.best_top1 = float(data["best_top1"])
        self.best_epoch = int(data["best_epoch"])
        last_eval = data.get("last_eval")
        if isinstance(last_eval, list | tuple) and len(last_eval) == 2:
            self._last_eval = [float(last_eval[0]), float(last_eval[1])]
        self._seconds_before = float(data.get("seconds", 0.0))
        self._config_changes = list(data.get("config_changes", [])) + self._config_changes
        self._saved_at = (phases[int(data["phase_index"])].name, int(data["epoch"]))
        return phase_index, epoch, optimizers

    def _restore_optimisation(
        self, optimisation: Optimisation, data: dict[str, Any], epoch: int
    ) -> None:
        """Load the optimisers' and schedules' states of ``data`` into a fresh ``optimisation``.

        The schedules are rebuilt for this start and advanced to ``epoch`` instead when the saved
        ones do not continue it: a checkpoint of an older sakd (without them), a new lr after a
        divergence, another number of ranks (another lr scale or number of iterations an epoch).
        """
        done = epoch * self._steps_per_epoch()
        saved, schedules = data["optimizers"], data.get("schedulers")
        fresh = {k: [dict(g) for g in o.param_groups] for k, o in optimisation.optimizers.items()}
        continues = isinstance(schedules, dict) and all(
            isinstance(schedules.get(name), dict)
            and schedules[name].get("last_epoch") == done
            and [g.get("initial_lr") for g in saved[name]["param_groups"]]
            == [g["initial_lr"] for g in fresh[name]]
            for name in fresh
        )
        for name, opt in optimisation.optimizers.items():
            opt.load_state_dict(saved[name])
        if continues:
            for name, scheduler in optimisation.schedulers.items():
                scheduler.load_state_dict(schedules[name])
            return
        for name, opt in optimisation.optimizers.items():
            for group, start in zip(opt.param_groups, fresh[name], strict=True):
                group["lr"], group["initial_lr"] = start["lr"], start["initial_lr"]
        fast_forward(optimisation, done)


_CHECKPOINT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "config": dict,
    "phase_index": int,
    "epoch": int,
    "modules": dict,
    "optimizers": dict,
    "best_top1": (int, float),
    "best_epoch": int,
    "rng": dict,
}


def _check_resumable(data: dict[str, Any], path: Path, phase_epochs: list[int]) -> None:
    """One line when ``data`` is not a complete training checkpoint of phases this long."""
    for key, kind in _CHECKPOINT_FIELDS.items():
        value = data.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise SakdError(
                f"{path} is not a complete sakd training checkpoint ({key!r} is missing or "
                "malformed): delete it to start this run over, or use resume=false"
            )
    phase_index, epoch = data["phase_index"], data["epoch"]
    if not 0 <= phase_index < len(phase_epochs) or not 0 <= epoch <= phase_epochs[phase_index]:
        raise SakdError(
            f"{path} stops at phase {phase_index}, epoch {epoch}, which this run does not have "
            f"(phases of {phase_epochs} epochs): use another output_dir, or resume=false to "
            "start over in this one"
        )
