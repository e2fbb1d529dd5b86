"""``sakd reproduce``: train the missing teachers, then every run of a grid, resumably and in shards.

Each run writes into its own folder, so the shared output folder is the only coordination needed:

- a run whose folder holds ``summary.json`` (and the same configuration) is skipped;
- a run with a folder but no ``summary.json`` was interrupted: calling the engine again on the same
  folder resumes it from ``checkpoints/last.pt``;
- ``--shard i/n`` runs the runs whose position in the grid's fixed order is ``i`` modulo ``n``;
- a teacher is trained by the first shard that needs it, holding ``<teacher run>/.sakd-train.lock``
  (created with ``O_CREAT | O_EXCL``, which exactly one process wins); the others poll until the
  teacher's ``summary.json`` appears. A lock left by a killed process on the same machine is
  recognised (its pid is gone) and taken over; one left by a killed process on another machine
  must be deleted by hand (the waiting shard names the file).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sakd.engine.run import run
from sakd.engine.rundir import RunFolder
from sakd.errors import SakdError
from sakd.experiments.grid import (
    GridPlan,
    PlannedRun,
    TeacherJob,
    is_finished,
    load_grid,
    plan_grid,
    teacher_ready,
)

LOCK_NAME = ".sakd-train.lock"
POLL_SECONDS = 30.0
EMPTY_LOCK_GRACE_SECONDS = 60.0

Log = Callable[[str], None]


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/n"`` → Shard(i, n); malformed values are a :class:`SakdError`."""
        index, sep, count = text.partition("/")
        try:
            shard = cls(int(index), int(count))
        except ValueError:
            shard = None
        if not sep or shard is None or not 0 <= shard.index < shard.count:
            raise SakdError(f"--shard {text!r} must be i/n with 0 <= i < n (e.g. --shard 0/4)")
        return shard


@dataclass
class ReproduceResult:
    """What one ``reproduce`` call did."""

    plan: GridPlan
    ran: list[Path]
    skipped: list[Path]
    teachers_trained: list[Path]


def run_status(planned: PlannedRun) -> str:
    """``done``, ``resume`` (folder with a started run) or ``new``."""
    folder = planned.output_dir
    if is_finished(folder):
        return "done"
    return "resume" if RunFolder(folder).has_config() else "new"


def reproduce(
    grid: str,
    overrides: list[str] | None = None,
    shard: Shard | None = None,
    out: str | Path | None = None,
    dry_run: bool = False,
    log: Log = print,
    poll_seconds: float = POLL_SECONDS,
) -> ReproduceResult:
    """Run the grid ``grid`` (R1/R2/R3 or a YAML path): missing teachers first, then its runs.

    Everything is validated before anything runs. Finished runs are skipped and interrupted ones
    resumed, so calling this again after a kill loses nothing and runs nothing twice.
    """
    if _under_torchrun():
        raise SakdError(
            "sakd reproduce runs one process per GPU: split the grid with --shard i/n (e.g. "
            "CUDA_VISIBLE_DEVICES=i sakd reproduce ... --shard i/n); torchrun is for a single run "
            "(torchrun --nproc_per_node=N -m sakd distill ...)"
        )
    spec, name = load_grid(grid)
    plan = plan_grid(spec, name, overrides, out)
    shard = shard or Shard()
    mine = plan.shard(shard.index, shard.count)
    where = f" (shard {shard.index}/{shard.count})" if shard.count > 1 else ""
    statuses = [run_status(r) for r in mine.runs]
    log(
        f"[reproduce] grid {name}{where}: {len(mine.runs)} of {len(plan.runs)} runs "
        f"({statuses.count('done')} done, {statuses.count('resume')} to resume, "
        f"{statuses.count('new')} new); {len(mine.teachers)} teacher(s)"
    )
    if dry_run:
        _log_plan(mine, statuses, log)
        return ReproduceResult(mine, [], [], [])
    trained = [p for job in mine.teachers if (p := ensure_teacher(job, log, poll_seconds))]
    ran: list[Path] = []
    skipped: list[Path] = []
    for position, planned in enumerate(mine.runs, 1):
        status = run_status(planned)
        if status == "done":
            skipped.append(planned.output_dir)
            continue
        log(
            f"[reproduce] {position}/{len(mine.runs)} {planned.pair} {planned.distiller}-"
            f"{planned.mode} seed {planned.seed}{' (resuming)' if status == 'resume' else ''} "
            f"-> {planned.output_dir}"
        )
        summary = run(planned.config)
        log(
            f"[reproduce] done: best top-1 {summary.best_top1:.2f}%, last {summary.last_top1:.2f}%,"
            f" {summary.seconds:.0f} s"
        )
        ran.append(planned.output_dir)
    log(
        f"[reproduce] grid {name}{where} finished: {len(ran)} run(s) trained, {len(skipped)} "
        "already done"
    )
    return ReproduceResult(mine, ran, skipped, trained)


def _under_torchrun() -> bool:
    """True in a process that torchrun started as one of several ranks."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def _log_plan(plan: GridPlan, statuses: list[str], log: Log) -> None:
    for job in plan.teachers:
        if teacher_ready(job):
            state = "present"
        elif job.run_dir is not None and (job.run_dir / LOCK_NAME).exists():
            state = "being trained (locked)"
        else:
            state = f"to train with {job.train_recipe}"
        log(f"  teacher {job.name}: {job.checkpoint} [{state}]")
    for planned, status in zip(plan.runs, statuses, strict=True):
        log(
            f"  #{planned.index} {planned.pair} {planned.distiller}-{planned.mode} seed "
            f"{planned.seed} [{status}] -> {planned.output_dir}"
        )


def ensure_teacher(
    job: TeacherJob, log: Log = print, poll_seconds: float = POLL_SECONDS
) -> Path | None:
    """Make sure ``job``'s checkpoint exists: train it under a lock, or wait for who holds it.

    Returns the teacher's run folder when this process trained (or resumed) it, else None.
    """
    if teacher_ready(job):
        return None
    run_dir = job.run_dir
    if job.train_config is None or run_dir is None:
        raise SakdError(
            f"teacher checkpoint {job.checkpoint!r} is missing and there is no recipe to train it"
        )
    lock = run_dir / LOCK_NAME
    announced = False
    while not teacher_ready(job):
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _stale(lock):
                log(f"[reproduce] removing stale lock {lock} (its process is gone)")
                lock.unlink(missing_ok=True)
                continue
            if not announced:
                log(
                    f"[reproduce] teacher {job.name} is being trained by another process "
                    f"({_holder(lock)}); waiting for {run_dir / 'summary.json'} (delete {lock} "
                    "if that process was killed on another machine)"
                )
                announced = True
            time.sleep(poll_seconds)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}) + "\n")
        try:
            if teacher_ready(job):
                return None
            log(f"[reproduce] training teacher {job.name} ({job.train_recipe}) -> {run_dir}")
            summary = run(job.train_config)
            log(f"[reproduce] teacher {job.name}: best top-1 {summary.best_top1:.2f}%")
        finally:
            lock.unlink(missing_ok=True)
        if not job.path.is_file():
            raise SakdError(
                f"training teacher {job.name} into {run_dir} did not write {job.checkpoint}: "
                "point the pair's teacher_checkpoint at checkpoints/best.pt of that folder"
            )
        return run_dir
    return None


def _holder(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text())
        return f"host {info['host']}, pid {info['pid']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown holder"


def _stale(lock: Path) -> bool:
    """True when the lock was taken on this machine by a process that no longer exists."""
    try:
        info = json.loads(lock.read_text())
        host, pid = info["host"], int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        # Being written right now, or its writer died between creating and writing it.
        try:
            return time.time() - lock.stat().st_mtime > EMPTY_LOCK_GRACE_SECONDS
        except OSError:
            return False
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
