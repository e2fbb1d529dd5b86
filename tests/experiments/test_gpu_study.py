"""scripts/gpu_study.py: the plan fits the measured costs into the budget; the pool packs and waits.

The whole study runs end to end on the CPU as ``benchmarks/gpu_check.sh OUT --device cpu --size
tiny --steps 4`` (docs/performance.md); these tests pin its arithmetic and its process pool.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_study.py"
spec = importlib.util.spec_from_file_location("sakd_tests_gpu_study", SCRIPT)
study = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = study  # dataclasses look their module up
spec.loader.exec_module(study)


def _cost(per_image: float, other: float = 2.0) -> dict:
    return {"seconds_per_image": per_image, "other_seconds_per_epoch": other, "startup_seconds": 5}


CALIBRATION = {
    "teacher": _cost(2e-4),
    "resnet8x4/alone": _cost(5e-5),
    "resnet8x4/fixed": _cost(1e-4),
    "resnet8x4/adaptive": _cost(2e-4),
    "wrn_16_2/alone": _cost(5e-5),
    "wrn_16_2/fixed": _cost(1e-4),
    "wrn_16_2/adaptive": _cost(2e-4),
    "startup_seconds": 5.0,
}


def _args(**changes) -> Namespace:
    args = dict(
        tiny=False,
        seeds=5,
        ablation_seeds=3,
        procs=8,
        students=["resnet8x4", "wrn_16_2"],
        teacher_share=0.3,
        min_epochs=5,
        max_epochs=100,
        reserve_seconds=40.0,
    )
    args.update(changes)
    return Namespace(**args)


def test_epoch_costs_and_the_predicted_wall_time():
    # an epoch: 60,000 images x seconds per image + evaluation and checkpoints
    assert study.epoch_cost(CALIBRATION, "resnet8x4/adaptive", 60000) == pytest.approx(14.0)
    assert study.epoch_cost(CALIBRATION, "resnet8x4/anti", 60000) == pytest.approx(14.0)
    assert study.epoch_cost(CALIBRATION, "resnet8x4/random", 60000) == pytest.approx(8.0)
    args = _args(students=["resnet8x4"])
    # 2 epochs: alone 5 x (5 + 2 x 5) = 75 s fits beside a 100-s teacher (7 slots); distillation
    # fixed 5 x 21 + adaptive 5 x 33 + random 3 x 21 + anti 3 x 33 = 432 s over 8 slots; + 33 / 2
    seconds = study.predicted_seconds(args, CALIBRATION, ["resnet8x4"], 2, teacher_seconds=100)
    assert seconds == pytest.approx(100 + 432 / 8 + 33 / 2)


def test_plan_takes_the_most_epochs_that_fit_and_drops_the_second_student_when_too_few():
    args = _args()
    plan = study.make_plan(args, CALIBRATION, seconds_left=480)
    usable = 480 - 40
    # the teacher: 30 % of the usable time less the start-up, 14 s per epoch
    assert plan.teacher_epochs == int((0.3 * usable - 5) // 14)
    teacher_seconds = 5 + plan.teacher_epochs * 14
    assert plan.predicted_seconds <= usable
    more = study.predicted_seconds(
        args, CALIBRATION, plan.students, plan.student_epochs + 1, teacher_seconds
    )
    assert more > usable  # one more epoch would not fit
    both = study.predicted_seconds(args, CALIBRATION, args.students, 5, teacher_seconds)
    assert (plan.students == args.students) == (both <= usable)

    roomy = study.make_plan(_args(), CALIBRATION, seconds_left=4000)
    assert roomy.students == ["resnet8x4", "wrn_16_2"] and roomy.student_epochs >= 5
    tight = study.make_plan(_args(max_epochs=100), CALIBRATION, seconds_left=60)
    assert tight.students == ["resnet8x4"] and tight.student_epochs == 1


def test_pool_runs_at_most_procs_at_once_and_waits_for_the_teacher(tmp_path):
    stamp = "import sys, time; open(sys.argv[1], 'a').write(f'{time.time()} ' ); time.sleep(0.5); open(sys.argv[1], 'a').write(f'{time.time()}\\n')"

    def job(name: str, **kw) -> object:
        return study.Job(name, [sys.executable, "-c", stamp, str(tmp_path / name)], "x", **kw)

    jobs = [job("teacher", cost=float("inf"))]
    jobs += [job(f"alone{i}", cost=1.0) for i in range(2)]
    jobs += [job(f"distill{i}", cost=2.0, needs_teacher=True) for i in range(3)]
    study.run_pool(jobs, 2, time.time() + 60, tmp_path / "logs", threads=1)
    assert all(j.returncode == 0 for j in jobs)
    spans = {j.name: [float(v) for v in (tmp_path / j.name).read_text().split()] for j in jobs}
    teacher_end = spans["teacher"][1]
    assert all(spans[f"distill{i}"][0] >= teacher_end for i in range(3))
    events = sorted([(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak <= 2


def test_pool_stops_what_runs_at_the_deadline(tmp_path):
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    jobs = [study.Job("slow", sleeper, "x"), study.Job("later", sleeper, "x")]
    started = time.time()
    study.run_pool(jobs, 1, time.time() + 1.5, tmp_path / "logs", threads=1)
    assert time.time() - started < 30
    assert jobs[0].returncode is not None and jobs[0].returncode != 0
    assert jobs[1].returncode is None  # never started
