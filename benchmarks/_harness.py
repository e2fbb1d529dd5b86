"""What the benchmarks share: synthetic data, random teachers, building a step through the
library, batches, interleaved timing, FLOPs and peak memory.

Every benchmark builds what it measures through the library's own builders (random weights; speed
does not depend on them) and times its variants in interleaved rounds, so that all ratios come
from the same stretch of a noisy shared machine.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from sakd.config import RunConfig, validate_config
from sakd.data import AugmentSpec, ImageSet, iterate_batches
from sakd.engine.build import build_task
from sakd.engine.runtime import Runtime
from sakd.engine.task_contract import Phase
from sakd.engine.trainer import make_optimizers, train_step
from sakd.models import create_model
from sakd.models.staged import SpotInfo

NUM_CLASSES = 100


# ------------------------------------------------------------------------------ data and models
def synthetic_data(num_samples: int) -> ImageSet:
    """CIFAR-100-shaped random images (the data's content does not change the step's cost)."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (num_samples, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.arange(num_samples) % NUM_CLASSES
    return ImageSet(
        images=images,
        labels=labels,
        num_classes=NUM_CLASSES,
        class_names=[str(i) for i in range(NUM_CLASSES)],
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        augment=AugmentSpec(crop_padding=4, horizontal_flip=True),
    )


def teacher_file(name: str, folder: Path) -> Path:
    """A checkpoint of a randomly initialised teacher (the real loading path is exercised)."""
    path = folder / f"{name}.pt"
    if not path.exists():
        torch.manual_seed(0)
        torch.save({"model": create_model(name, NUM_CLASSES).state_dict()}, path)
    return path


def same_family(teacher: str, student: str) -> bool:
    """Whether two model names differ only in depth/width digits (homogeneous spots)."""

    def family(name: str) -> str:
        return "".join(ch for ch in name if ch.isalpha())

    return family(teacher) == family(student)


def pooled_spot(dim: int) -> SpotInfo:
    """A pooled-vector spot of size ``dim``."""
    return SpotInfo(index=4, role="pooled", channels=dim, reduction=0, shape=(dim,))


# ----------------------------------------------------------------------------------- one step
def distill_config(
    student: str,
    folder: Path,
    teacher: str | None = None,
    distiller: str | None = None,
    mode: str | None = None,
    **settings: Any,
) -> RunConfig:
    """A validated run configuration: the student alone, or distilled from a random ``teacher``
    with ``distiller`` (spots in ``mode``, homogeneous when the pair is of one family)."""
    config: dict[str, Any] = {"model": {"name": student}, **settings}
    if teacher is not None:
        config["teacher"] = {"name": teacher, "checkpoint": str(teacher_file(teacher, folder))}
        config["distiller"] = {"name": distiller}
        if mode is not None:
            config["spots"] = {"mode": mode, "homogeneous": same_family(teacher, student)}
    return validate_config(config)


@dataclass
class Step:
    """A built training step: the task, its main phase, the optimizers and the runtime."""

    task: torch.nn.Module
    phase: Phase
    optimizers: list
    runtime: Runtime

    def run(self, batch: tuple) -> None:
        """One training step (forward, backward, optimizer) on ``batch``."""
        train_step(self.runtime, self.phase, self.optimizers, *batch, 0)


def build_step(cfg: RunConfig, data: ImageSet) -> Step:
    """The main phase of ``cfg``'s task on ``data``, in train mode (student compiled when asked)."""
    runtime = Runtime.create(cfg.device, cfg.precision, cfg.channels_last, cfg.compile)
    task, _ = build_task(cfg, data, runtime)
    runtime.compile_network(task.eval_model)
    phase = task.phases(cfg.epochs)[-1]
    task.train()
    return Step(task, phase, make_optimizers(phase), runtime)


def full_batches(data: ImageSet, batch_size: int, count: int, device: str = "cpu") -> list:
    """``count`` full training batches, made on ``device`` by the library's data path."""
    out, epoch = [], 0
    while len(out) < count:
        for batch in iterate_batches(
            data, batch_size, train=True, seed=0, epoch=epoch, device=device
        ):
            if len(batch[1]) == batch_size:
                out.append(batch)
            if len(out) == count:
                break
        epoch += 1
    return out


# ------------------------------------------------------------------------------------- timing
def synchronize(device: str) -> None:
    """Wait for the device's queued work (CUDA), so a timer sees it finished."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def interleaved_times(
    steps: dict[str, Callable[[int], Any]],
    warmup: int,
    repeats: int,
    device: str = "cpu",
) -> dict[str, list[float]]:
    """Wall seconds of each ``step(i)`` over ``repeats`` rounds after ``warmup`` untimed ones.

    The variants alternate within every round, so they share the machine's load; the device is
    synchronised before and after each timed call.
    """
    for i in range(warmup):
        for step in steps.values():
            step(i)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(repeats):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step(warmup + i)
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def median_times(times: dict[str, list[float]]) -> dict[str, float]:
    """The median of each variant's times."""
    return {name: statistics.median(values) for name, values in times.items()}


def step_flops(step: Step, batch: tuple) -> int:
    """FLOPs of one training step (forward + backward) as counted by FlopCounterMode."""
    counter = FlopCounterMode(display=False)
    with counter:
        step.run(batch)
    return counter.get_total_flops()


# ------------------------------------------------------------------------------------- memory
def peak_rss_mb() -> float:
    """This process's peak resident memory (MB): VmHWM, which, unlike ru_maxrss, is not inherited
    from the parent across fork + exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fresh_process_peak_rss_mb(script: str, case: dict, options: Sequence[str]) -> float:
    """Peak RSS (MB) of ``python script --single CASE_JSON *options``: a fresh process that builds
    the case and runs a few steps (see :func:`report_single_peak`)."""
    cmd = [sys.executable, script, "--single", json.dumps(case), *options]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def report_single_peak(step: Step, batches: list) -> None:
    """The ``--single`` child: run the steps, print the peak RSS as the last line."""
    for batch in batches:
        step.run(batch)
    print(peak_rss_mb())
