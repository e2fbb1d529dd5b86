"""`sakd reproduce`: every run exactly once across interruptions, resume, shards, teachers, locks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from sakd.cli import main
from sakd.engine import trainer as trainer_module
from sakd.engine.checkpoint import sha256_file
from sakd.errors import SakdError
from sakd.experiments import runner as runner_module
from sakd.experiments.grid import TeacherJob, load_grid, plan_grid
from sakd.experiments.report import build_report
from sakd.experiments.runner import LOCK_NAME, Shard, ensure_teacher, reproduce

from .conftest import quiet, write_grid


@pytest.mark.fault("interrupted")
def test_interrupted_grid_runs_every_run_exactly_once(interrupted_grid):
    root, calls = interrupted_grid
    spec, name = load_grid(str(root / "grid.yaml"))
    expected = [r.output_dir for r in plan_grid(spec, name, root=root).runs]
    assert len(expected) == 4
    assert calls[0] == expected[:1]  # interrupted right after the first run finished
    assert calls[1] == expected[1:]  # the rest, in the grid's order, nothing twice
    assert calls[2] == []  # a third start finds everything done
    assert Counter(calls[0] + calls[1]) == Counter(expected)
    for folder in expected:
        assert (folder / "summary.json").is_file()
        assert len((folder / "metrics.jsonl").read_text().splitlines()) == 1


def test_grid_order_is_seed_major_and_deterministic(tmp_path):
    grid = write_grid(
        tmp_path / "g.yaml", distillers=["at", "kd"], modes=["fixed", "adaptive"], seeds=[3, 1]
    )
    spec, name = load_grid(str(grid))
    first = [(r.seed, r.distiller, r.mode) for r in plan_grid(spec, name).runs]
    again = [(r.seed, r.distiller, r.mode) for r in plan_grid(spec, name).runs]
    assert first == again
    assert first == [
        (seed, d, m) for seed in (3, 1) for d in ("at", "kd") for m in ("fixed", "adaptive")
    ]


def test_shards_partition_the_runs_and_need_only_their_teachers(tmp_path):
    zoo = tmp_path / "zoo/resnet8/checkpoints/best.pt"
    grid = write_grid(
        tmp_path / "g.yaml",
        pairs=[
            "quickstart",
            {
                "recipe": "quickstart",
                "teacher": "resnet8",
                "teacher_checkpoint": str(zoo),
                "teacher_recipe": "quickstart/teacher",
            },
        ],
        teacher_overrides=["model.name=resnet8"],
        seeds=[0, 1, 2],
    )
    spec, name = load_grid(str(grid))
    plan = plan_grid(spec, name, root=tmp_path)
    shards = [plan.shard(i, 3) for i in range(3)]
    indices = [[r.index for r in s.runs] for s in shards]
    assert sorted(sum(indices, [])) == list(range(len(plan.runs))) == list(range(6))
    assert all(i % 3 == k for k, shard in enumerate(indices) for i in shard)
    # Runs alternate between the pairs, so shard 0 of 2 holds only the packaged teacher's runs.
    only_packaged = plan.shard(0, 2)
    assert [t.checkpoint for t in only_packaged.teachers] == ["sakd:assets/quickstart_teacher.pt"]
    assert {t.name for t in plan.shard(1, 2).teachers} == {"resnet8"}
    assert Shard.parse("1/3") == Shard(1, 3)
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(SakdError, match="--shard"):
            Shard.parse(bad)


@pytest.mark.fault("interrupted")
def test_interrupted_run_resumes_from_its_last_epoch(tmp_path, monkeypatch):
    grid = write_grid(tmp_path / "g.yaml", overrides=[*_tiny_two_epochs(), "output_dir=runs/r"])
    saves: list[str] = []
    real_save = trainer_module.save_checkpoint
    interrupt = {"armed": True}

    def save_then_maybe_die(path, payload):
        real_save(path, payload)
        saves.append(Path(path).name)
        if interrupt["armed"] and Path(path).name == "last.pt":
            interrupt["armed"] = False
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "save_checkpoint", save_then_maybe_die)
    with pytest.raises(KeyboardInterrupt):
        reproduce(str(grid), out=tmp_path, log=quiet)
    run_dir = tmp_path / "runs/r"
    assert not (run_dir / "summary.json").exists()
    saves.clear()
    lines: list[str] = []
    result = reproduce(str(grid), out=tmp_path, log=lines.append)
    assert result.ran == [run_dir]
    assert any("(resuming)" in line for line in lines)
    assert saves.count("last.pt") == 1  # only the second epoch was trained again
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]


def _tiny_two_epochs() -> list[str]:
    from .conftest import TINY

    return [o for o in TINY if not o.startswith("epochs=")] + ["epochs=2"]


def test_missing_teacher_is_trained_first_then_used(tmp_path):
    zoo = tmp_path / "zoo/resnet8/checkpoints/best.pt"
    grid = write_grid(
        tmp_path / "g.yaml",
        pairs=[
            {
                "recipe": "quickstart",
                "teacher": "resnet8",
                "teacher_checkpoint": "zoo/resnet8/checkpoints/best.pt",
                "teacher_recipe": "quickstart/teacher",
            }
        ],
        teacher_overrides=["model.name=resnet8"],
    )
    result = reproduce(str(grid), out=tmp_path, log=quiet)
    assert result.teachers_trained == [zoo.parent.parent]
    assert (zoo.parent.parent / "summary.json").is_file()
    assert not (zoo.parent.parent / LOCK_NAME).exists()
    teacher_cfg = (zoo.parent.parent / "config.yaml").read_text()
    assert "train_limit: 64" in teacher_cfg and "epochs: 1" in teacher_cfg  # data/epochs apply
    (run_dir,) = result.ran
    assert json.loads((run_dir / "run.json").read_text())["teacher_sha256"] == sha256_file(zoo)
    again = reproduce(str(grid), out=tmp_path, log=quiet)
    assert again.teachers_trained == [] and again.ran == []


def _job(tmp_path) -> TeacherJob:
    from sakd.config import load_config

    run_dir = tmp_path / "teacher"
    cfg = load_config("quickstart/teacher", [f"output_dir={run_dir}"])
    return TeacherJob("resnet32", str(run_dir / "checkpoints/best.pt"), cfg, "quickstart/teacher")


def _finish_teacher(job: TeacherJob) -> None:
    run_dir = job.run_dir
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints/best.pt").write_bytes(b"weights")
    (run_dir / "config.yaml").write_text("model: {name: resnet32}\n")
    (run_dir / "summary.json").write_text("{}")


def test_a_teacher_locked_by_another_process_is_waited_for(tmp_path, monkeypatch):
    job = _job(tmp_path)
    job.run_dir.mkdir(parents=True)
    lock = job.run_dir / LOCK_NAME
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    monkeypatch.setattr(runner_module, "run", lambda cfg: pytest.fail("trained a locked teacher"))

    def other_process_finishes():
        time.sleep(0.3)
        _finish_teacher(job)
        lock.unlink()

    helper = threading.Thread(target=other_process_finishes)
    helper.start()
    lines: list[str] = []
    assert ensure_teacher(job, lines.append, poll_seconds=0.02) is None
    helper.join()
    assert any(str(lock) in line and "another process" in line for line in lines)


@pytest.mark.fault("run-folder")
def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, monkeypatch):
    job = _job(tmp_path)
    job.run_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = job.run_dir / LOCK_NAME
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    trained = []

    def fake_run(cfg):
        assert lock.is_file() and json.loads(lock.read_text())["pid"] == os.getpid()
        trained.append(cfg.output_dir)
        _finish_teacher(job)
        return SimpleNamespace(best_top1=0.0)

    monkeypatch.setattr(runner_module, "run", fake_run)
    assert ensure_teacher(job, quiet, poll_seconds=0.02) == job.run_dir
    assert trained == [str(job.run_dir)] and not lock.exists()


def test_reproduce_from_the_command_line(tmp_path, capsys):
    grid = write_grid(tmp_path / "g.yaml", distillers=["kd", "at"], seeds=[0, 1])
    assert (
        main(["reproduce", str(grid), "--dry-run", "--shard", "1/2", "--out", str(tmp_path)]) == 0
    )
    out = capsys.readouterr().out
    assert "2 of 4 runs" in out and "#1 " in out and "#3 " in out and "#0 " not in out
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


@pytest.mark.fault("config")
def test_reproduce_refuses_torchrun_and_points_to_shards(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SakdError, match="--shard i/n"):
        reproduce(str(write_grid(tmp_path / "g.yaml")), out=tmp_path, log=quiet)


def test_student_alone_runs_are_trained_and_paired_by_the_report(tmp_path):
    grid = write_grid(
        tmp_path / "g.yaml",
        distillers=["at"],
        modes=["fixed"],
        student_alone="runs/{student}-alone/seed{seed}",
    )
    result = reproduce(str(grid), out=tmp_path, log=quiet)
    alone = tmp_path / "runs/resnet8-alone/seed0"
    assert result.ran == [alone, tmp_path / "runs/resnet32-resnet8/at-fixed/seed0"]
    saved = json.loads((alone / "run.json").read_text())
    assert "teacher_top1" not in saved  # trained without a teacher
    report = build_report(tmp_path / "runs", str(grid))
    (cell,) = report.cells
    (comparison,) = cell.comparisons()
    assert (comparison.label, comparison.best.n) == ("fixed − student alone", 1)
    assert [r.seed for r in report.singles[0].get("single").runs] == [0]
