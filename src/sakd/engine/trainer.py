"""The training loop: phases of epochs, one backward per step, evaluation, checkpoints, resume.

It steps whatever named losses and parameter groups a :class:`~sakd.engine.task.Task` gives it and
knows no distiller. Every epoch of the main phase writes one record to ``metrics.jsonl`` and
TensorBoard, and atomically rewrites ``checkpoints/last.pt`` (and ``best.pt`` on a new best test
top-1). A run started again with the same configuration resumes from ``last.pt`` at the next epoch
and ends with the same weights as an uninterrupted run (data order and augmentation are a pure
function of seed and epoch; every RNG state is in the checkpoint).

Under ``torchrun`` (see :mod:`sakd.engine.distributed`) each rank trains on its shard of every
epoch through ``DistributedDataParallel``; the epoch's losses and statistics are summed over the
ranks, evaluation is sharded, and rank 0 alone writes metrics and checkpoints while the others
wait. Checkpoints hold the unwrapped modules, so a run resumes on any number of ranks.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from sakd.config import RunConfig, config_differences
from sakd.data import ImageSet, iterate_batches
from sakd.engine.checkpoint import load_checkpoint, load_weights_strict, save_checkpoint
from sakd.engine.distributed import (
    DataParallelPhase,
    all_reduce_sum,
    average_batchnorm_statistics,
    broadcast_from_main,
    on_main_rank,
)
from sakd.engine.evaluate import accuracy
from sakd.engine.metrics import MetricsLog
from sakd.engine.runtime import Runtime, rng_state, set_rng_state
from sakd.engine.task import Phase, StepResult, Task
from sakd.errors import SakdError

NAN_CHECK_EVERY = 50


@dataclass
class RunSummary:
    """What a finished run reports."""

    best_top1: float
    best_epoch: int
    last_top1: float
    last_top5: float
    epochs: int
    seconds: float


def train_step(
    runtime: Runtime,
    phase: Phase,
    optimizers: dict[str, torch.optim.Optimizer],
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
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)
    total.backward()
    for opt in optimizers.values():
        opt.step()
    return result


def make_optimizers(phase: Phase) -> dict[str, torch.optim.Optimizer]:
    """One SGD optimizer per non-empty parameter group of ``phase``."""
    return {
        name: torch.optim.SGD(
            group.params,
            lr=group.lr,
            momentum=group.momentum,
            weight_decay=group.weight_decay,
            nesterov=group.nesterov,
        )
        for name, group in phase.groups.items()
        if group.params
    }


class Trainer:
    """Runs a task's phases on a dataset with the settings of a :class:`RunConfig`."""

    def __init__(
        self,
        config: RunConfig,
        task: Task,
        train_set: ImageSet,
        test_set: ImageSet,
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

    # ------------------------------------------------------------------ public
    def fit(self) -> RunSummary:
        """Train every phase to the end (resuming from ``last.pt`` when allowed and present)."""
        started = time.perf_counter()
        phases = self.task.phases(self.config.epochs)
        self._num_phases = len(phases)
        phase_index, epoch, optimizers = 0, 0, None
        resume_from = self.ckpt_dir / "last.pt"
        saved = self._read_checkpoint(resume_from) if self.config.resume else None
        if saved is not None:
            phase_index, epoch, optimizers = self._restore(saved, resume_from, phases)
        metrics = MetricsLog(self.run_dir) if self.is_main else None
        pre_metrics = (
            MetricsLog(self.run_dir, "pretrain.jsonl", tensorboard=False) if self.is_main else None
        )
        if metrics is not None and phase_index == len(phases) - 1:
            metrics.truncate_after(epoch)
        last = {"test_top1": float("nan"), "test_top5": float("nan")}
        try:
            for index in range(phase_index, len(phases)):
                if optimizers is None:
                    optimizers = make_optimizers(phases[index])
                with self._parallel(phases[index]) as phase:
                    for ep in range(epoch, phase.epochs):
                        record = self._train_epoch(phase, index, ep, optimizers)
                        average_batchnorm_statistics(self.task)
                        log = pre_metrics
                        if phase.evaluate:
                            top1, top5 = self.evaluate()
                            record.update(test_top1=top1, test_top5=top5)
                            last = record
                            if top1 > self.best_top1:
                                self.best_top1, self.best_epoch = top1, ep
                            record["best_top1"] = self.best_top1
                            log = metrics if index == len(phases) - 1 else pre_metrics
                        if log is not None:
                            log.write(record)
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
            best_epoch=self.best_epoch,
            last_top1=last["test_top1"],
            last_top5=last["test_top5"],
            epochs=self.config.epochs,
            seconds=time.perf_counter() - started,
        )

    def evaluate(self) -> tuple[float, float]:
        """Top-1 and top-5 accuracy (%) of the evaluated model on the test split."""
        return accuracy(
            self.task.eval_model, self.test_set, self.runtime, self.config.eval_batch_size
        )

    # ----------------------------------------------------------------- helpers
    def _parallel(self, phase: Phase) -> contextlib.AbstractContextManager[Phase]:
        """The phase as stepped on this launch: through DDP when there are several ranks."""
        if self.runtime.world_size == 1:
            return contextlib.nullcontext(phase)
        return DataParallelPhase(self.task, phase)

    def _set_lr(self, phase: Phase, optimizers, epoch: int) -> dict[str, float]:
        factor = 1.0
        if phase.decay:
            milestones = self.config.schedule.scaled_milestones(phase.epochs)
            factor = self.config.schedule.lr_decay ** sum(epoch >= m for m in milestones)
        lrs = {}
        for name, opt in optimizers.items():
            lr = phase.groups[name].lr * factor * self.lr_scale
            for group in opt.param_groups:
                group["lr"] = lr
            lrs[name] = lr
        return lrs

    def _train_epoch(
        self, phase: Phase, phase_index: int, epoch: int, optimizers
    ) -> dict[str, Any]:
        lrs = self._set_lr(phase, optimizers, epoch)
        self.task.train()
        cfg = self.config
        # Pre-training phases draw their own data order (a different epoch key), the main phase
        # uses the epoch number itself.
        is_main = phase_index == self._num_phases - 1
        data_epoch = epoch if is_main else 10_000 * (phase_index + 1) + epoch
        runtime = self.runtime
        batches = iterate_batches(
            self.train_set,
            cfg.batch_size,
            train=True,
            seed=cfg.seed,
            epoch=data_epoch,
            device=runtime.device,
            rank=runtime.rank,
            world_size=runtime.world_size,
        )
        loss_sums: dict[str, Tensor] = {}
        stat_sums: dict[str, Tensor] = {}
        seen = 0
        bar = tqdm(
            total=len(self.train_set.labels),
            unit="img",
            unit_scale=False,
            leave=False,
            disable=not (cfg.progress and self.is_main),
            desc=f"{phase.name} {epoch + 1}/{phase.epochs}",
        )
        start = time.perf_counter()
        step = -1
        for step, (images, labels, index) in enumerate(batches):
            result = train_step(self.runtime, phase, optimizers, images, labels, index, epoch)
            n = labels.numel()
            seen += n
            for name, value in result.losses.items():
                loss_sums[name] = loss_sums.get(name, 0) + value.detach().float() * n
            for name, value in result.stats.items():
                stat_sums[name] = stat_sums.get(name, 0) + value.detach().float() * n
            if (step + 1) % NAN_CHECK_EVERY == 0:
                self._check_finite(loss_sums, phase, epoch, step + 1)
            bar.update(n * runtime.world_size)
        bar.close()
        self._check_finite(loss_sums, phase, epoch, step + 1)
        seconds = time.perf_counter() - start
        summed = all_reduce_sum(
            {
                **{f"loss/{k}": v for k, v in loss_sums.items()},
                **{f"stat/{k}": v for k, v in stat_sums.items()},
                "seen": torch.tensor(float(seen), device=runtime.device),
            }
        )
        seen = int(summed.pop("seen"))
        loss_sums = {k[len("loss/") :]: v for k, v in summed.items() if k.startswith("loss/")}
        stat_sums = {k[len("stat/") :]: v for k, v in summed.items() if k.startswith("stat/")}
        record: dict[str, Any] = {
            "epoch": epoch,
            "phase": phase.name,
            "lr": lrs.get("student", next(iter(lrs.values()), 0.0)),
            "lrs": lrs,
            "losses": {k: float(v) / max(seen, 1) for k, v in loss_sums.items()},
            "images_per_sec": seen / seconds if seconds > 0 else 0.0,
            "epoch_seconds": seconds,
        }
        for name, value in stat_sums.items():
            mean = (value / max(seen, 1)).cpu()
            record[name] = mean.tolist() if mean.dim() else float(mean)
        return record

    def _check_finite(
        self, loss_sums: dict[str, Tensor], phase: Phase, epoch: int, steps: int
    ) -> None:
        for name, value in loss_sums.items():
            if not torch.isfinite(torch.as_tensor(value)).all():
                raise SakdError(
                    f"loss {name!r} is not finite (NaN/inf) in {phase.name} epoch {epoch + 1} within "
                    f"{steps} steps: lower lr, use precision=fp32, or check the data; the last finished "
                    "epoch is kept in checkpoints/last.pt"
                )

    def _payload(self, phase_index: int, epoch: int, optimizers) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(mode="json"),
            "phase_index": phase_index,
            "epoch": epoch,
            "modules": {k: m.state_dict() for k, m in self.task.checkpoint_modules().items()},
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "rng": rng_state(),
        }

    def _save(self, phase_index: int, epoch: int, optimizers, new_best: bool) -> None:
        """Rank 0 writes ``last.pt`` (and ``best.pt``); the other ranks wait for it."""

        def write() -> None:
            payload = self._payload(phase_index, epoch, optimizers)
            save_checkpoint(self.ckpt_dir / "last.pt", payload)
            if new_best:
                save_checkpoint(self.ckpt_dir / "best.pt", payload)

        on_main_rank(write)

    def _read_checkpoint(self, path: Path) -> dict[str, Any] | None:
        """Rank 0's ``last.pt`` (None when absent) on every rank, its tensors on the CPU."""

        def read() -> dict[str, Any] | None:
            return load_checkpoint(path) if path.is_file() else None

        return broadcast_from_main(on_main_rank(read))

    def _restore(self, data: dict[str, Any], path: Path, phases: list[Phase]):
        changed = config_differences(data.get("config", {}), self.config)
        if changed:
            raise SakdError(
                f"{path} was written with a different configuration ({', '.join(changed)} differ): "
                "use another output_dir, or resume=false to start over in this one"
            )
        modules = self.task.checkpoint_modules()
        if set(data["modules"]) != set(modules):
            raise SakdError(
                f"{path} holds modules {sorted(data['modules'])}, expected {sorted(modules)}"
            )
        for name, module in modules.items():
            load_weights_strict(module, data["modules"][name], f"checkpoint {path} ({name})")
        phase_index, epoch = int(data["phase_index"]), int(data["epoch"])
        if epoch >= phases[phase_index].epochs and phase_index + 1 < len(phases):
            phase_index, epoch = phase_index + 1, 0
        optimizers = make_optimizers(phases[phase_index])
        if epoch > 0:
            for name, opt in optimizers.items():
                opt.load_state_dict(data["optimizers"][name])
        self.best_top1 = float(data["best_top1"])
        self.best_epoch = int(data["best_epoch"])
        set_rng_state(data["rng"])
        return phase_index, epoch, optimizers
