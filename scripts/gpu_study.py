"""Does spot-adaptive distillation help? A packed multi-seed study on the full Fashion-MNIST.

    python scripts/gpu_study.py OUTDIR --data-root DIR [--device cuda] [--budget-seconds 480]

One command, sized to its time budget by a measured dry run, results in OUTDIR:

1. **Calibration** (``plan.json``): ``--procs`` processes at once on the device, each 2 epochs on
   ``--calibration-images`` training images and the whole test split: the teacher (resnet32x4)
   trained alone, and each student alone / fixed / adaptive (AT + KD, from a random teacher: speed
   does not depend on its weights; random costs what fixed does, anti what adaptive does). Epoch 2's training seconds per image (under
   that packing), the per-epoch evaluation and checkpoint seconds and each process's start-up
   seconds give every run's cost per epoch.
2. **Plan**: the teacher gets ``--teacher-share`` of the remaining budget (its epochs follow);
   the students' epochs are the most that let every run fit in the rest, packed ``--procs`` wide.
   resnet8x4 always runs; wrn_16_2 (a heterogeneous student) too when both fit with at least
   ``--min-epochs`` epochs.
3. **Runs** (``runs/``): the teacher, then (while it trains) the students alone
   (``sakd train``), then, once the teacher is ready, ``sakd reproduce`` of ``grid.yaml`` (AT + KD
   fixed and adaptive from the 50/50 start, ``--seeds`` seeds) and ``grid_ablation.yaml`` (random
   and anti, ``--ablation-seeds`` seeds), one shard per run (``--shard k/N``), most expensive
   first, ``--procs`` processes at a time. Runs still going at the deadline are stopped (SIGTERM:
   the finished epochs are kept) and listed as missing by the report.
4. **Report**: ``sakd report runs --grid grid.yaml --plots`` into ``report/`` (paired adaptive −
   fixed gains by seed), ``sakd inspect`` of adaptive seed 0 of the first student (``inspect/``),
   and ``README.md`` (command, machine, plan, times).

``--tiny`` is the CPU dry run of the same code path: 200 / 100 images, one epoch, two seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEACHER = "resnet32x4"
STUDENTS = ("resnet8x4", "wrn_16_2")
# Kinds timed by the calibration; random costs what fixed does (the same step with drawn masks),
# anti what adaptive does (the same policy and routed pass).
MEASURED_KINDS = ("adaptive", "fixed", "alone")
COST_OF = {
    "alone": "alone",
    "fixed": "fixed",
    "adaptive": "adaptive",
    "random": "fixed",
    "anti": "adaptive",
}
MAIN_MODES = ("fixed", "adaptive")
ABLATION_MODES = ("random", "anti")
TRAIN_IMAGES = 60000


@dataclass(eq=False)  # hashable by identity: the pool keys its running jobs by them
class Job:
    """One process of the study: its name, command, the run kind it costs as, and its result."""

    name: str
    argv: list[str]
    kind: str
    student: str = ""
    needs_teacher: bool = False
    folder: str = ""
    cost: float = 0.0
    returncode: int | None = None
    seconds: float = 0.0
    log: str = ""


@dataclass
class Plan:
    """What the calibration measured and what the study runs."""

    procs: int
    calibration: dict = field(default_factory=dict)
    teacher_epochs: int = 1
    student_epochs: int = 1
    students: list[str] = field(default_factory=list)
    seeds: int = 5
    ablation_seeds: int = 3
    predicted_seconds: float = 0.0


def sakd(*args: str) -> list[str]:
    """The command line of ``python -m sakd ARGS``."""
    return [sys.executable, "-m", "sakd", *args]


def common(args, epochs: int | None = None) -> list[str]:
    """Overrides every run of the study shares."""
    out = [
        f"data.root={args.data_root}",
        f"device={args.device}",
        "progress=false",
        "spots.homogeneous=false",
    ]
    if args.tiny:
        out += ["data.train_limit=200", "data.test_limit=100"]
    if epochs is not None:
        out.append(f"epochs={epochs}")
    return out


def run_pool(jobs: list[Job], procs: int, deadline: float, logs: Path, threads: int) -> None:
    """Run ``jobs`` ``procs`` at a time, most expensive ready job first; stop all at ``deadline``.

    A job that ``needs_teacher`` starts only after the job named ``teacher`` ended with status 0.
    """
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    waiting = sorted(jobs, key=lambda j: -j.cost)
    running: dict[Job, tuple[subprocess.Popen, float, object]] = {}
    teacher_done = not any(j.name == "teacher" for j in jobs)
    while waiting or running:
        for job, (process, started, handle) in list(running.items()):
            if process.poll() is not None:
                job.returncode, job.seconds = process.returncode, time.time() - started
                handle.close()
                del running[job]
                if job.name == "teacher":
                    teacher_done = job.returncode == 0
                    if not teacher_done:  # nothing that needs it can run
                        for other in [j for j in waiting if j.needs_teacher]:
                            waiting.remove(other)
                print(f"[study] {job.name}: exit {job.returncode} after {job.seconds:.0f} s")
        if time.time() > deadline:
            for job, (process, _, _) in running.items():
                print(f"[study] {job.name}: stopped at the deadline")
                process.send_signal(signal.SIGTERM)
            for process, _, _ in running.values():
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
            for job in running:
                job.returncode = -signal.SIGTERM
            for job in waiting:
                print(f"[study] {job.name}: not started, budget spent")
            return
        while len(running) < procs:
            ready = [j for j in waiting if teacher_done or not j.needs_teacher]
            if not ready:
                break
            job = ready[0]
            waiting.remove(job)
            job.log = str(logs / f"{job.name}.txt")
            handle = open(job.log, "w")  # noqa: SIM115 - closed when the job ends
            process = subprocess.Popen(
                job.argv, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
            running[job] = (process, time.time(), handle)
        time.sleep(0.5)


def calibrate(args, work: Path, procs: int, deadline: float) -> dict:
    """Per-image training seconds of every kind under ``procs``-way packing, and the overheads."""
    import torch

    from sakd.models import create_model

    teacher = work / "random_teacher.pt"
    torch.manual_seed(0)
    torch.save({"model": create_model(TEACHER, 10).state_dict()}, teacher)
    images = args.calibration_images
    settings = [*common(args, 2), f"data.train_limit={images}"]
    teacher_out = work / "cal" / "teacher"
    jobs = [
        Job(
            "cal-teacher",
            sakd("train", f"fashion-mnist/train/{TEACHER}", *settings, f"output_dir={teacher_out}"),
            "teacher",
            folder=str(teacher_out),
        )
    ]
    kinds = [(s, k) for k in MEASURED_KINDS for s in args.students]
    for slot in range(max(procs - 1, len(kinds))):
        student, kind = kinds[slot % len(kinds)]
        folder = work / "cal" / f"{student}-{kind}-{slot}"
        if kind == "alone":
            argv = sakd(
                "train", f"fashion-mnist/train/{student}", *settings, f"output_dir={folder}"
            )
        else:
            argv = sakd(
                "distill",
                f"fashion-mnist/{TEACHER}-{student}",
                *settings,
                f"output_dir={folder}",
                f"teacher.checkpoint={teacher}",
                "distiller.name=at",
                f"spots.mode={kind}",
            )
        jobs.append(Job(folder.name, argv, kind, student, folder=str(folder)))
    started = time.time()
    run_pool(jobs, procs, deadline, work / "cal-logs", args.threads)
    measured: dict[str, list[dict]] = {}
    for job in jobs:
        metrics, summary = Path(job.folder) / "metrics.jsonl", Path(job.folder) / "summary.json"
        if job.returncode != 0 or not summary.is_file():
            raise SystemExit(f"gpu_study: calibration run {job.name} failed: see {job.log}")
        records = [json.loads(line) for line in metrics.read_text().splitlines()]
        wall = json.loads(summary.read_text())["seconds"]
        train = sum(r["epoch_seconds"] for r in records)
        key = "teacher" if job.kind == "teacher" else f"{job.student}/{job.kind}"
        measured.setdefault(key, []).append(
            {
                "seconds_per_image": records[-1]["epoch_seconds"] / images,
                "other_seconds_per_epoch": max(0.0, (wall - train) / len(records)),
                "startup_seconds": max(0.0, job.seconds - wall),
            }
        )
    costs = {
        key: {name: sum(m[name] for m in items) / len(items) for name in items[0]}
        for key, items in measured.items()
    }
    costs["startup_seconds"] = max(m["startup_seconds"] for ms in measured.values() for m in ms)
    costs["elapsed_seconds"] = time.time() - started
    return costs


def epoch_cost(calibration: dict, key: str, images: int) -> float:
    """Seconds of one epoch (training + evaluation and checkpoints) of a run of kind ``key``."""
    student, _, kind = key.rpartition("/")
    cost = calibration[f"{student}/{COST_OF[kind]}" if student else key]
    return cost["seconds_per_image"] * images + cost["other_seconds_per_epoch"]


def predicted_seconds(
    args, calibration: dict, students, epochs: int, teacher_seconds: float
) -> float:
    """Wall seconds of the runs: the teacher, with the students alone in the slots beside it, then
    the distillation runs ``args.procs`` wide, plus half the longest run for the last straggler."""
    images = 200 if args.tiny else TRAIN_IMAGES
    startup = calibration["startup_seconds"]
    counts = {"alone": args.seeds, "fixed": args.seeds, "adaptive": args.seeds}
    counts |= {"random": args.ablation_seeds, "anti": args.ablation_seeds}
    alone = distill = longest = 0.0
    for student in students:
        for kind, count in counts.items():
            one = startup + epochs * epoch_cost(calibration, f"{student}/{kind}", images)
            longest = max(longest, one)
            if kind == "alone":
                alone += count * one
            else:
                distill += count * one
    beside_teacher = (args.procs - 1) * teacher_seconds
    return teacher_seconds + (max(0.0, alone - beside_teacher) + distill) / args.procs + longest / 2


def make_plan(args, calibration: dict, seconds_left: float) -> Plan:
    """The teacher's and the students' epochs that fit ``seconds_left``, packed ``procs`` wide.

    The teacher gets ``teacher_share`` of the time; the students the most epochs (up to
    ``max_epochs``) that fit the rest. Both students when that gives at least ``min_epochs``,
    else the first alone; one epoch when nothing fits (the report then shows what finished).
    """
    images = 200 if args.tiny else TRAIN_IMAGES
    usable = seconds_left - args.reserve_seconds
    teacher_cost = epoch_cost(calibration, "teacher", images)
    startup = calibration["startup_seconds"]
    teacher_epochs = math.floor((args.teacher_share * usable - startup) / teacher_cost)
    teacher_epochs = min(max(1, teacher_epochs), args.max_epochs)
    teacher_seconds = startup + teacher_epochs * teacher_cost
    choices = [list(args.students)] + ([args.students[:1]] if len(args.students) > 1 else [])
    for students in choices:
        needed = args.min_epochs if len(students) > 1 else 1
        for epochs in range(args.max_epochs, needed - 1, -1):
            wall = predicted_seconds(args, calibration, students, epochs, teacher_seconds)
            if wall <= usable:
                return Plan(
                    args.procs,
                    calibration,
                    teacher_epochs,
                    epochs,
                    students,
                    args.seeds,
                    args.ablation_seeds,
                    wall,
                )
    students = args.students[:1]
    wall = predicted_seconds(args, calibration, students, 1, teacher_seconds)
    print(f"[study] warning: even 1 epoch is predicted to take {wall:.0f} s of {usable:.0f} s")
    return Plan(
        args.procs, calibration, teacher_epochs, 1, students, args.seeds, args.ablation_seeds, wall
    )


def write_grid(path: Path, name: str, args, plan: Plan, teacher: Path, modes, seeds: int) -> None:
    """A grid file of AT + KD runs of every planned student in ``modes`` over ``seeds`` seeds."""
    lines = [
        f"# Written by scripts/gpu_study.py: {name}.",
        f"name: {name}",
        "pairs:",
        *(
            f"  - {{recipe: fashion-mnist/{TEACHER}-{s}, teacher_checkpoint: {teacher}}}"
            for s in plan.students
        ),
        "distillers: [at]",
        f"modes: [{', '.join(modes)}]",
        f"seeds: [{', '.join(str(s) for s in range(seeds))}]",
        "overrides:",
        *(f"  - {o}" for o in common(args, plan.student_epochs)),
        f"  - output_dir={args.out / 'runs'}/{{teacher}}-{{student}}/{{distiller}}-{{mode}}/seed{{seed}}",
    ]
    path.write_text("\n".join(lines) + "\n")


def study_jobs(args, plan: Plan, teacher_dir: Path) -> list[Job]:
    """The teacher, the students alone, and one ``sakd reproduce`` shard per distillation run."""
    jobs = [
        Job(
            "teacher",
            sakd(
                "train",
                f"fashion-mnist/train/{TEACHER}",
                *common(args, plan.teacher_epochs),
                f"output_dir={teacher_dir}",
            ),
            "teacher",
            cost=math.inf,
        )
    ]
    images = 200 if args.tiny else TRAIN_IMAGES
    for student in plan.students:
        for seed in range(plan.seeds):
            jobs.append(
                Job(
                    f"alone-{student}-seed{seed}",
                    sakd(
                        "train",
                        f"fashion-mnist/train/{student}",
                        *common(args, plan.student_epochs),
                        f"seed={seed}",
                        f"output_dir={args.out / 'runs' / 'alone' / student / f'seed{seed}'}",
                    ),
                    "alone",
                    student,
                    cost=epoch_cost(plan.calibration, f"{student}/alone", images),
                )
            )
    for grid, modes, seeds in (
        ("grid.yaml", MAIN_MODES, plan.seeds),
        ("grid_ablation.yaml", ABLATION_MODES, plan.ablation_seeds),
    ):
        # plan_grid orders runs seed-major, then pair, distiller, mode
        order = [
            (student, mode) for _ in range(seeds) for student in plan.students for mode in modes
        ]
        for index, (student, mode) in enumerate(order):
            jobs.append(
                Job(
                    f"{grid.removesuffix('.yaml')}-{index:03d}-{student}-{mode}",
                    sakd("reproduce", str(args.out / grid), "--shard", f"{index}/{len(order)}"),
                    mode,
                    student,
                    needs_teacher=True,
                    cost=epoch_cost(plan.calibration, f"{student}/{mode}", images),
                )
            )
    return jobs


def machine() -> str:
    """The device in words: GPU name and memory, or the CPU."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}"
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the study's folder (results and runs)")
    parser.add_argument("--data-root", required=True, help="folder of the Fashion-MNIST IDX files")
    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    parser.add_argument("--budget-seconds", type=float, default=480)
    parser.add_argument("--procs", type=int, help="processes at once (default 8; --tiny 2)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of fixed, adaptive, alone")
    parser.add_argument("--ablation-seeds", type=int, default=3, help="seeds of random and anti")
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=STUDENTS)
    parser.add_argument("--teacher-share", type=float, default=0.3)
    parser.add_argument("--min-epochs", type=int, default=5, help="to add the second student")
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--calibration-images", type=int, help="default 6000; --tiny 64")
    parser.add_argument("--reserve-seconds", type=float, help="for report and inspect (default 40)")
    parser.add_argument("--work", type=Path, help="scratch folder (default OUT/work)")
    parser.add_argument("--tiny", action="store_true", help="CPU dry run: 200 images, 1 epoch")
    args = parser.parse_args()
    if args.tiny:
        args.seeds = min(args.seeds, 2)
        args.ablation_seeds = min(args.ablation_seeds, 1)
        args.max_epochs, args.min_epochs = 1, 1
    args.procs = args.procs or (2 if args.tiny else 8)
    args.calibration_images = args.calibration_images or (64 if args.tiny else 6000)
    args.reserve_seconds = args.reserve_seconds or (20.0 if args.tiny else 40.0)
    args.out = args.out.resolve()
    args.data_root = str(Path(args.data_root).resolve())
    work = (args.work or args.out / "work").resolve()
    started = time.time()
    deadline = started + args.budget_seconds

    from sakd.data import load_dataset
    from sakd.errors import SakdError

    try:
        load_dataset("fashion-mnist", args.data_root, train=False)
    except SakdError as error:
        raise SystemExit(f"gpu_study: error: {error}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    print(f"[study] {command} on {machine()}")

    calibration = calibrate(args, work, args.procs, deadline)
    plan = make_plan(args, calibration, deadline - time.time())
    (args.out / "plan.json").write_text(json.dumps(asdict(plan), indent=2))
    print(
        f"[study] calibrated in {calibration['elapsed_seconds']:.0f} s: teacher "
        f"{plan.teacher_epochs} epochs, students {plan.students} {plan.student_epochs} epochs, "
        f"{plan.seeds} seeds (random/anti {plan.ablation_seeds}), {plan.procs} processes; "
        f"predicted {plan.predicted_seconds:.0f} s"
    )
    teacher_dir = args.out / "runs" / "teacher" / TEACHER
    teacher = teacher_dir / "checkpoints" / "best.pt"
    write_grid(
        args.out / "grid.yaml", "gpu_fashion_mnist", args, plan, teacher, MAIN_MODES, plan.seeds
    )
    write_grid(
        args.out / "grid_ablation.yaml",
        "gpu_fashion_mnist_ablation",
        args,
        plan,
        teacher,
        ABLATION_MODES,
        plan.ablation_seeds,
    )
    jobs = study_jobs(args, plan, teacher_dir)
    runs_started = time.time()
    run_pool(jobs, args.procs, deadline - args.reserve_seconds, args.out / "logs", args.threads)
    runs_seconds = time.time() - runs_started

    report = subprocess.run(
        sakd("report", str(args.out / "runs"), "--grid", str(args.out / "grid.yaml"))
        + ["--out", str(args.out / "report"), "--plots"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    print(report.stdout + report.stderr)
    adaptive = args.out / "runs" / f"{TEACHER}-{plan.students[0]}" / "at-adaptive" / "seed0"
    inspect = subprocess.run(
        sakd("inspect", str(adaptive), "--device", args.device),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    print(inspect.stdout + inspect.stderr)
    if (adaptive / "inspect").is_dir():
        shutil.copytree(adaptive / "inspect", args.out / "inspect", dirs_exist_ok=True)
    failed = [j for j in jobs if j.returncode != 0]
    total = time.time() - started
    lines = [
        "# Fashion-MNIST study (scripts/gpu_study.py)",
        "",
        f"- command: `python scripts/{command}`",
        f"- machine: {machine()}",
        f"- date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime(started))}",
        f"- budget {args.budget_seconds:.0f} s; took {total:.0f} s (calibration "
        f"{calibration['elapsed_seconds']:.0f} s, runs {runs_seconds:.0f} s, predicted "
        f"{plan.predicted_seconds:.0f} s)",
        f"- teacher {TEACHER}: {plan.teacher_epochs} epochs; students {', '.join(plan.students)}: "
        f"{plan.student_epochs} epochs; AT + KD fixed / adaptive (50/50 start) and students "
        f"alone over {plan.seeds} seeds, random / anti over {plan.ablation_seeds}; "
        f"{plan.procs} processes at once",
        f"- runs: {len(jobs) - len(failed)} of {len(jobs)} finished"
        + (f"; not finished: {', '.join(j.name for j in failed)}" if failed else ""),
        f"- report: report/report.md (exit {report.returncode}); inspect of {adaptive.name} of "
        f"{adaptive.parent.parent.name}: inspect/ (exit {inspect.returncode})",
    ]
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    (args.out / "jobs.json").write_text(
        json.dumps([{k: v for k, v in asdict(j).items() if k != "cost"} for j in jobs], indent=2)
    )
    if failed or report.returncode or inspect.returncode:
        sys.exit(1)


if __name__ == "__main__":
    main()
