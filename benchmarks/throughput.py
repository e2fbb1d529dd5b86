"""Training throughput of one pair, side by side: student alone, KD, a distiller fixed and adaptive.

All four steps (and the data pipeline) are built once per device and timed in interleaved rounds,
so every ratio comes from the same stretch of a noisy machine. Per case and device: median
images/s over the rounds, FLOPs of one step (``torch.utils.flop_counter``, forward + backward),
peak memory (CUDA: ``torch.cuda.max_memory_allocated`` over a few steps, minus what was allocated
before the case was built, so the shared dataset is left out; CPU, with ``--memory``: peak RSS of a
fresh process running the case) and, for the adaptive step, its time ratio over the fixed step
divided by their FLOP ratio (the target is at most 1.1). The data pipeline (a whole epoch of
device-resident batching and augmentation) is timed in the same rounds and compared with the
fastest step.

    python benchmarks/throughput.py                                  # CPU (+ CUDA when present)
    python benchmarks/throughput.py --devices cpu --precisions bf16 fp32 --memory
    python benchmarks/throughput.py --devices cuda --compile --project-epochs 240

``--project-epochs E`` also trains the adaptive run for real (the library's trainer, synthetic
CIFAR-100-shaped data of ``--samples`` images, evaluation and checkpoints included) and projects
the wall time of E epochs from the time of the epochs after the first (which pays for warm-up and
compilation).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from _harness import (
    Step,
    build_step,
    distill_config,
    fresh_process_peak_rss_mb,
    full_batches,
    interleaved_times,
    report_single_peak,
    step_flops,
    synchronize,
    synthetic_data,
)

from sakd.config import RunConfig
from sakd.data import ImageSet, iterate_batches
from sakd.engine.trainer import Trainer

KINDS = ("student", "kd", "fixed", "adaptive")


@dataclass
class Case:
    """One step to measure: what is trained, on which device, in which precision."""

    kind: str
    teacher: str
    student: str
    distiller: str
    device: str
    precision: str
    compile: bool = False

    @property
    def label(self) -> str:
        return f"{self.device} {self.precision} {self.kind}"


def case_config(case: Case, folder: Path, batch_size: int, **extra) -> RunConfig:
    """The run configuration of ``case`` (random teacher weights; speed does not depend on them)."""
    distilled = case.kind != "student"
    return distill_config(
        case.student,
        folder,
        teacher=case.teacher if distilled else None,
        distiller="kd" if case.kind == "kd" else case.distiller,
        mode=case.kind if case.kind in ("fixed", "adaptive") else None,
        device=case.device,
        precision=case.precision,
        channels_last="auto",
        compile=case.compile,
        batch_size=batch_size,
        progress=False,
        **extra,
    )


def build(case: Case, data: ImageSet, folder: Path, batch_size: int) -> Step:
    """The main training step of ``case`` (student compiled when asked)."""
    return build_step(case_config(case, folder, batch_size), data)


def data_epoch_seconds(data: ImageSet, batch_size: int, device: str, epoch: int) -> None:
    """Batch, augment and normalise one whole epoch on the device (timed by the caller)."""
    for _ in iterate_batches(data, batch_size, train=True, seed=0, epoch=epoch, device=device):
        pass


def cuda_peak_mb(step: Step, batches, device: str, allocated_before: int) -> float:
    """Peak CUDA memory (MB) of a few steps above what was allocated before the case was built."""
    torch.cuda.reset_peak_memory_stats(device)
    for batch in batches[:3]:
        step.run(batch)
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - allocated_before) / 2**20


def run_single(case_json: str, args) -> None:
    """Child process of the CPU ``--memory`` measurement: print the peak RSS after three steps."""
    torch.set_num_threads(args.threads)
    case = Case(**json.loads(case_json))
    data = synthetic_data(args.samples)
    with tempfile.TemporaryDirectory() as tmp:
        step = build(case, data, Path(tmp), args.batch)
        report_single_peak(step, full_batches(data, args.batch, 3, case.device))


def measure_device(device: str, args, folder: Path) -> dict:
    """Every case of ``device`` (and its data pipeline), timed in interleaved rounds."""
    data = synthetic_data(args.samples)
    if device != "cpu":
        data = data.to(device)
    cases = [
        Case(kind, args.teacher, args.student, args.distiller, device, precision, args.compile)
        for precision in args.precisions
        for kind in KINDS
    ]
    batches = full_batches(data, args.batch, args.steps + 2, device)
    results: dict[str, dict] = {}
    built: dict[str, Step] = {}
    for case in cases:
        allocated = torch.cuda.memory_allocated(device) if device != "cpu" else 0
        step = built[case.label] = build(case, data, folder, args.batch)
        for batch in batches[:2]:
            step.run(batch)
        row: dict = {"case": asdict(case), "images_per_sec": []}
        if args.flops and not args.compile:
            row["gflops_per_step"] = step_flops(step, batches[0]) / 1e9
        if device != "cpu":
            row["peak_mb"] = cuda_peak_mb(step, batches, device, allocated)
        elif args.memory:
            options = ["--batch", str(args.batch), "--threads", str(args.threads)]
            options += ["--samples", str(args.samples)]
            row["peak_mb"] = fresh_process_peak_rss_mb(__file__, asdict(case), options)
        results[case.label] = row
    data_epoch_seconds(data, args.batch, device, epoch=0)

    def timed(step: Step):
        def run(_: int) -> None:
            for batch in batches[2:]:
                step.run(batch)

        return run

    variants = {label: timed(step) for label, step in built.items()}
    variants["data pipeline"] = lambda i: data_epoch_seconds(data, args.batch, device, i + 1)
    times = interleaved_times(variants, warmup=0, repeats=args.rounds, device=device)
    for label, row in results.items():
        row["images_per_sec"] = [args.steps * args.batch / t for t in times[label]]
        row["median_images_per_sec"] = statistics.median(row["images_per_sec"])
    pipeline = [len(data) / t for t in times["data pipeline"]]
    return {"cases": results, "data_images_per_sec": statistics.median(pipeline)}


def project_run(device: str, args, folder: Path) -> dict:
    """Wall time of ``--project-epochs`` epochs of the adaptive run, from measured epochs."""
    precision = args.precisions[0]
    case = Case(
        "adaptive", args.teacher, args.student, args.distiller, device, precision, args.compile
    )
    data = synthetic_data(args.samples)
    test = synthetic_data(max(args.samples // 5, 1))
    if device != "cpu":
        data, test = data.to(device), test.to(device)
    seconds = {}
    for epochs in (1, 1 + args.measured_epochs):
        out = folder / f"project-{epochs}"
        out.mkdir(parents=True)
        cfg = case_config(case, folder, args.batch, epochs=epochs, output_dir=str(out))
        step = build_step(cfg, data)
        synchronize(device)
        start = time.perf_counter()
        Trainer(cfg, step.task, data, test, step.runtime, out).fit()
        synchronize(device)
        seconds[epochs] = time.perf_counter() - start
    per_epoch = (seconds[1 + args.measured_epochs] - seconds[1]) / args.measured_epochs
    return {
        "first_epoch_seconds": seconds[1],
        "epoch_seconds": per_epoch,
        "projected_epochs": args.project_epochs,
        "projected_minutes": (seconds[1] + per_epoch * (args.project_epochs - 1)) / 60,
        "train_images": len(data),
        "test_images": len(test),
    }


def render(measured: dict, projections: dict, args) -> str:
    """Markdown: one table per device, then the data pipeline and projections."""
    lines = [
        f"Pair {args.teacher} -> {args.student}, distiller {args.distiller}, batch {args.batch}, "
        f"{args.rounds} rounds x {args.steps} steps (median), torch {torch.__version__}, "
        f"CPU {platform.processor() or platform.machine()} with {args.threads} threads"
        + (", student compiled" if args.compile else "")
        + ".",
    ]
    for device, result in measured.items():
        name = torch.cuda.get_device_name(device) if device != "cpu" else "CPU"
        cases = result["cases"]
        lines += [
            "",
            f"{device} ({name}):",
            "",
            "| precision | step | images/s | time / student step | GFLOP/step | peak MB "
            "| time ratio / FLOP ratio (vs fixed) |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in cases.values():
            case = row["case"]
            speed = row["median_images_per_sec"]
            alone = cases[f"{device} {case['precision']} student"]["median_images_per_sec"]
            flops = row.get("gflops_per_step")
            fixed = cases[f"{device} {case['precision']} fixed"]
            ratio = "–"
            if case["kind"] == "adaptive" and flops and fixed.get("gflops_per_step"):
                time_ratio = fixed["median_images_per_sec"] / speed
                ratio = f"{time_ratio / (flops / fixed['gflops_per_step']):.2f}"
            step = {"student": "student alone", "kd": "KD"}.get(
                case["kind"], f"{args.distiller} {case['kind']}"
            )
            flops_text = f"{flops:.2f}" if flops else "–"
            peak_text = f"{row['peak_mb']:.0f}" if "peak_mb" in row else "–"
            lines.append(
                f"| {case['precision']} | {step} | {speed:.1f} | {alone / speed:.2f}x | "
                f"{flops_text} | {peak_text} | {ratio} |"
            )
        fastest = max(row["median_images_per_sec"] for row in cases.values())
        data_speed = result["data_images_per_sec"]
        lines += [
            "",
            f"Data pipeline on {device}: {data_speed:.0f} images/s, "
            f"{data_speed / fastest:.0f}x the fastest training step (target: at least 20x).",
        ]
    for device, projection in projections.items():
        lines.append(
            f"Projected {projection['projected_epochs']}-epoch adaptive run on {device}: "
            f"{projection['projected_minutes']:.1f} min (first epoch "
            f"{projection['first_epoch_seconds']:.1f} s, then {projection['epoch_seconds']:.1f} "
            f"s per epoch of {projection['train_images']} + {projection['test_images']} images)."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--distiller", default="at")
    default_devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    parser.add_argument("--devices", nargs="+", default=default_devices)
    parser.add_argument("--precisions", nargs="+", default=["bf16"], choices=["bf16", "fp32"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the student")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--samples", type=int, default=50000, help="training-set size")
    parser.add_argument(
        "--no-flops", dest="flops", action="store_false", help="skip counting (also with --compile)"
    )
    parser.add_argument("--memory", action="store_true", help="CPU peak RSS (fresh processes)")
    parser.add_argument("--project-epochs", type=int, default=0)
    parser.add_argument("--measured-epochs", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.single:
        run_single(args.single, args)
        return
    measured, projections = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for device in args.devices:
            measured[device] = measure_device(device, args, Path(tmp))
            if args.project_epochs:
                projections[device] = project_run(device, args, Path(tmp))
    print(render(measured, projections, args))
    if args.json:
        args.json.write_text(
            json.dumps({"measured": measured, "projections": projections}, indent=2)
        )


if __name__ == "__main__":
    main()
