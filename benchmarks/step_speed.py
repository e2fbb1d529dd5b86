"""Training-step speed, FLOPs and peak memory of distillation steps, measured side by side.

Every configuration (pair × distiller × spot mode × precision) is built once through the library's
own builders (random weights; speed does not depend on them), then timed in interleaved rounds so
that all ratios come from the same stretch of a noisy shared machine (``_harness.py``). Reported per configuration:
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
import statistics
import tempfile
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
    synthetic_data,
)

from sakd.data import ImageSet


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


def build(case: Case, data: ImageSet, folder: Path) -> Step:
    """The main training step of ``case`` on the CPU."""
    cfg = distill_config(
        case.student,
        folder,
        teacher=case.teacher,
        distiller=case.distiller,
        mode=case.mode,
        precision=case.precision,
        channels_last=case.precision == "bf16",
        device="cpu",
    )
    return build_step(cfg, data)


def run_single(case_json: str, args) -> None:
    """Child process of the ``--memory`` measurement: print the peak RSS after three steps."""
    torch.set_num_threads(args.threads)
    case = Case(**json.loads(case_json))
    data = synthetic_data(args.samples)
    with tempfile.TemporaryDirectory() as tmp:
        report_single_peak(build(case, data, Path(tmp)), full_batches(data, args.batch, 3))


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
    batches = full_batches(data, args.batch, args.steps + 2)
    warmup_batches, timed_batches = batches[:2], batches[2:]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        built = {}
        for case in cases:
            step = built[case.label] = build(case, data, Path(tmp))
            for batch in warmup_batches:
                step.run(batch)
            results[case.label] = {"case": asdict(case), "images_per_sec": []}
            if args.flops:
                results[case.label]["gflops_per_step"] = step_flops(step, warmup_batches[0]) / 1e9

        def timed(step: Step):
            def run(_: int) -> None:
                for batch in timed_batches:
                    step.run(batch)

            return run

        times = interleaved_times(
            {label: timed(step) for label, step in built.items()}, warmup=0, repeats=args.rounds
        )
    for case in cases:
        row = results[case.label]
        row["images_per_sec"] = [args.steps * args.batch / t for t in times[case.label]]
        row["median_images_per_sec"] = statistics.median(row["images_per_sec"])
        if args.memory:
            options = ["--batch", str(args.batch), "--threads", str(args.threads)]
            options += ["--samples", str(args.samples)]
            row["peak_rss_mb"] = fresh_process_peak_rss_mb(__file__, asdict(case), options)
    print(render(results, cases, args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


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
