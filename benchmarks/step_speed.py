"""Training-step speed, FLOPs and peak memory of distillation steps, measured side by side.

Every configuration (pair × distiller × spot mode × precision) is built once through the library's
own builders (random weights; speed does not depend on them), then timed in interleaved rounds so
that all ratios come from the same stretch of a noisy shared machine. Reported per configuration:
median images/s over the rounds, FLOPs of one step (``torch.utils.flop_counter``; forward +
backward), and, with ``--memory``, the peak resident memory of a fresh process running it.

Examples (the tables in docs/performance.md):
    python benchmarks/step_speed.py --pairs resnet32x4:resnet8x4 --modes fixed \
        --distillers kd fitnet at sp cc vid rkd pkt ab ft fsp nst crd dkd
    python benchmarks/step_speed.py --pairs resnet32x4:resnet8x4 resnet56:resnet20 \
        --distillers at crd --modes fixed adaptive --flops --memory
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from sakd.config import validate_config
from sakd.data import AugmentSpec, ImageSet, iterate_batches
from sakd.engine.build import build_task
from sakd.engine.runtime import Runtime
from sakd.engine.trainer import make_optimizers, train_step
from sakd.models import create_model

NUM_CLASSES = 100


@dataclass
class Case:
    """One configuration to measure."""

    teacher: str
    student: str
    distiller: str
    mode: str
    precision: str

    @property
    def label(self) -> str:
        return f"{self.teacher}->{self.student} {self.distiller} {self.mode} {self.precision}"


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


def build(case: Case, data: ImageSet, folder: Path, homogeneous: bool):
    """Task, main phase, optimizers and runtime for ``case``."""
    cfg = validate_config(
        {
            "model": {"name": case.student},
            "teacher": {
                "name": case.teacher,
                "checkpoint": str(teacher_file(case.teacher, folder)),
            },
            "distiller": {"name": case.distiller},
            "spots": {"mode": case.mode, "homogeneous": homogeneous},
            "precision": case.precision,
            "channels_last": case.precision == "bf16",
            "device": "cpu",
        }
    )
    runtime = Runtime.create("cpu", case.precision, cfg.channels_last)
    task, _ = build_task(cfg, data, runtime)
    phase = task.phases(cfg.epochs)[-1]
    task.train()
    return task, phase, make_optimizers(phase), runtime


def batches(data: ImageSet, batch_size: int, count: int):
    """``count`` training batches of the synthetic data."""
    out = []
    epoch = 0
    while len(out) < count:
        for batch in iterate_batches(data, batch_size, train=True, seed=0, epoch=epoch):
            if len(batch[1]) == batch_size:
                out.append(batch)
            if len(out) == count:
                break
        epoch += 1
    return out


def step_flops(phase, optimizers, runtime, batch) -> int:
    """FLOPs of one training step (forward + backward) as counted by FlopCounterMode."""
    counter = FlopCounterMode(display=False)
    with counter:
        train_step(runtime, phase, optimizers, *batch, 0)
    return counter.get_total_flops()


def peak_memory_mb(case: Case, args) -> float:
    """Peak RSS (MB) of a fresh process that builds ``case`` and runs a few steps."""
    cmd = [
        sys.executable,
        __file__,
        "--single",
        json.dumps(case.__dict__),
        "--batch",
        str(args.batch),
        "--threads",
        str(args.threads),
        "--samples",
        str(args.samples),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB): VmHWM, which, unlike ru_maxrss, is not inherited
    from the parent across fork + exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_single(case_json: str, args) -> None:
    """Child process of :func:`peak_memory_mb`: print the peak RSS after three steps."""
    torch.set_num_threads(args.threads)
    case = Case(**json.loads(case_json))
    data = synthetic_data(args.samples)
    with tempfile.TemporaryDirectory() as tmp:
        _, phase, optimizers, runtime = build(case, data, Path(tmp), case.teacher != case.student)
        for batch in batches(data, args.batch, 3):
            train_step(runtime, phase, optimizers, *batch, 0)
    print(peak_rss_mb())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=["resnet32x4:resnet8x4"])
    parser.add_argument("--distillers", nargs="+", default=["kd", "at", "crd"])
    parser.add_argument("--modes", nargs="+", default=["fixed"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=50000, help="training-set size (CRD's bank)")
    parser.add_argument("--flops", action="store_true")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        run_single(args.single, args)
        return
    torch.set_num_threads(args.threads)
    data = synthetic_data(args.samples)
    cases = [
        Case(*pair.split(":"), distiller, mode, precision)
        for pair in args.pairs
        for distiller in args.distillers
        for mode in args.modes
        for precision in args.precisions
    ]
    timed_batches = batches(data, args.batch, args.steps + 2)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        built = {}
        for case in cases:
            homogeneous = _same_family(case.teacher, case.student)
            built[case.label] = build(case, data, Path(tmp), homogeneous)
            _, phase, optimizers, runtime = built[case.label]
            for batch in timed_batches[:2]:
                train_step(runtime, phase, optimizers, *batch, 0)
            results[case.label] = {"case": case.__dict__, "images_per_sec": []}
            if args.flops:
                results[case.label]["gflops_per_step"] = (
                    step_flops(phase, optimizers, runtime, timed_batches[0]) / 1e9
                )
        for _ in range(args.rounds):
            for case in cases:
                _, phase, optimizers, runtime = built[case.label]
                start = time.perf_counter()
                for batch in timed_batches[2:]:
                    train_step(runtime, phase, optimizers, *batch, 0)
                seconds = time.perf_counter() - start
                results[case.label]["images_per_sec"].append(args.steps * args.batch / seconds)
    for case in cases:
        row = results[case.label]
        row["median_images_per_sec"] = statistics.median(row["images_per_sec"])
        if args.memory:
            row["peak_rss_mb"] = peak_memory_mb(case, args)
    print(render(results, cases, args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _same_family(teacher: str, student: str) -> bool:
    def family(name: str) -> str:
        return "".join(ch for ch in name if ch.isalpha())

    return family(teacher) == family(student)


def render(results: dict, cases: list[Case], args) -> str:
    """A markdown table with ratios against KD (same pair, mode, precision) and fixed mode."""
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {args.threads} threads, "
        f"torch {torch.__version__}, batch {args.batch}, {args.rounds} rounds x {args.steps} steps "
        "(median).",
        "",
        "| pair | distiller | mode | precision | images/s | time / KD step | time / fixed step "
        "| GFLOP/step | FLOP ratio vs fixed | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def get(teacher, student, distiller, mode, precision):
        return results.get(f"{teacher}->{student} {distiller} {mode} {precision}")

    for case in cases:
        row = results[case.label]
        speed = row["median_images_per_sec"]
        kd = get(case.teacher, case.student, "kd", case.mode, case.precision)
        fixed = get(case.teacher, case.student, case.distiller, "fixed", case.precision)
        vs_kd = f"{kd['median_images_per_sec'] / speed:.2f}x" if kd else "–"
        vs_fixed = f"{fixed['median_images_per_sec'] / speed:.2f}x" if fixed else "–"
        flops = row.get("gflops_per_step")
        flop_ratio = (
            f"{flops / fixed['gflops_per_step']:.2f}x"
            if flops is not None and fixed and fixed.get("gflops_per_step")
            else "–"
        )
        lines.append(
            f"| {case.teacher}→{case.student} | {case.distiller} | {case.mode} | {case.precision} "
            f"| {speed:.1f} | {vs_kd} | {vs_fixed} | "
            f"{flops:.1f} | {flop_ratio} | "
            if flops is not None
            else f"| {case.teacher}→{case.student} | {case.distiller} | {case.mode} | {case.precision} "
            f"| {speed:.1f} | {vs_kd} | {vs_fixed} | – | – | "
        )
        lines[-1] += f"{row['peak_rss_mb']:.0f} |" if "peak_rss_mb" in row else "– |"
    return "\n".join(lines)


if __name__ == "__main__":
    main()
