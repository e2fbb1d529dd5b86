"""Where one training step's time goes: torch.profiler over a few steps of one pair and mode.

    python benchmarks/profile_step.py --device cuda --precision bf16 --batch 64 [--mode adaptive]

Builds the step through the library (random teacher, CIFAR-100-shaped data on the device), runs
``--warmup`` steps, then profiles ``--steps`` steps and prints: the wall time per step, the device
time its kernels took (on CUDA: the sum of kernel times, so busy = kernel time / wall time; far
below 100 % means the step is bound by the host launching kernels, not by the GPU), the number of
kernel launches per step, and the ops that took the most device (or CPU) time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _harness import build_step, distill_config, full_batches, synchronize, synthetic_data
from torch.profiler import ProfilerActivity, profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--distiller", default="at")
    parser.add_argument("--mode", default="adaptive")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--rows", type=int, default=20, help="ops listed")
    args = parser.parse_args()
    on_gpu = args.device.startswith("cuda")
    data = synthetic_data(args.samples).to(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = distill_config(
            args.student,
            Path(tmp),
            args.teacher,
            args.distiller,
            args.mode,
            device=args.device,
            precision=args.precision,
            channels_last=on_gpu,
            batch_size=args.batch,
        )
        step = build_step(cfg, data)
    batches = full_batches(data, args.batch, args.warmup + args.steps, args.device)
    for batch in batches[: args.warmup]:
        step.run(batch)
    synchronize(args.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for batch in batches[args.warmup :]:
            step.run(batch)
        synchronize(args.device)
        wall = (time.perf_counter() - start) / args.steps
    events = prof.key_averages()
    print(
        f"{args.teacher} -> {args.student}, {args.distiller} {args.mode}, {args.precision}, batch "
        f"{args.batch} on {torch.cuda.get_device_name(args.device) if on_gpu else 'CPU'}, torch "
        f"{torch.__version__}: {wall * 1e3:.2f} ms per step ({args.batch / wall:.0f} images/s)"
    )
    if on_gpu:
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.device_time for e in kernels) / 1e3 / args.steps  # us -> ms
        print(
            f"kernels: {len(kernels) / args.steps:.0f} launches per step, {busy:.2f} ms of GPU "
            f"time per step: the GPU is busy {100 * busy / (wall * 1e3):.0f} % of the step"
        )
    sort = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=args.rows))


if __name__ == "__main__":
    main()
