"""`sakd report`: paired gains with 95 % intervals (hand-computed), the student-alone baseline,
the test set's binomial noise, spot rates per epoch, in report.md, report.csv and the figures."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from sakd.cli import main
from sakd.experiments.report import build_report, render_csv, render_markdown

from .conftest import fabricate_run, write_grid

# Per seed, test top-1 after each of two epochs (best and last differ on purpose).
FIXED = {0: [80.0, 79.0], 1: [81.0, 81.0], 2: [82.0, 80.0]}
ADAPTIVE = {0: [81.0, 81.0], 1: [83.0, 82.0], 3: [90.0, 90.0]}  # seed 3 has no fixed run
RANDOM = {0: [78.0, 77.0]}
ANTI = {0: [79.0, 79.0], 1: [80.0, 80.0], 2: [80.0, 79.0]}
ALONE = {0: [75.0, 76.0], 1: [77.0, 77.0], 2: [76.0, 75.0]}
RATES = {0: [[0.5, 1.0], [0.7, 1.0]], 1: [[0.7, 1.0], [0.9, 1.0]], 3: [[0.6, 1.0], [0.8, 1.0]]}
TEST_SIZE = 1000


def _with_test_size(folder):
    info = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**info, "test_size": TEST_SIZE}))


def _fabricate(root, alone_epochs: int = 2):
    arms = {"fixed": FIXED, "adaptive": ADAPTIVE, "random": RANDOM, "anti": ANTI}
    for mode, curves in arms.items():
        for seed, curve in curves.items():
            folder = fabricate_run(
                root / f"runs/at-{mode}/seed{seed}",
                "quickstart",
                ["distiller.name=at", f"spots.mode={mode}", f"seed={seed}", "epochs=2"],
                curve,
                spot_rates=RATES[seed] if mode == "adaptive" else [[1.0, 1.0]] * 2,
            )
            _with_test_size(folder)
    for seed, curve in ALONE.items():
        folder = fabricate_run(
            root / f"runs/alone/seed{seed}",
            "quickstart/student",
            [f"seed={seed}", f"epochs={alone_epochs}"],
            curve + curve[-1:] * (alone_epochs - len(curve)),
        )
        _with_test_size(folder)


def _row(report, distiller, mode):
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    (row,) = [r for r in rows if r["distiller"] == distiller and r["mode"] == mode]
    return row


def test_paired_gains_with_intervals_by_hand(tmp_path):
    _fabricate(tmp_path)
    report = build_report(tmp_path)
    (cell,) = report.cells
    gains = {c.label: c for c in cell.comparisons()}
    assert list(gains) == [
        "adaptive − fixed",
        "random − fixed",
        "anti − fixed",
        "fixed − student alone",
    ]
    # adaptive − fixed pairs seeds 0 and 1 (differences 1 and 2); seeds 2 and 3 are unpaired.
    # sd = sqrt(0.5), half width = t(0.975, 1) 12.7062 × 0.7071 / sqrt(2) = 6.3531
    adaptive = gains["adaptive − fixed"].best
    assert (adaptive.n, adaptive.unpaired) == (2, 2)
    assert adaptive.mean == pytest.approx(1.5)
    assert adaptive.low == pytest.approx(1.5 - 6.3531, abs=1e-3)
    assert adaptive.high == pytest.approx(1.5 + 6.3531, abs=1e-3)
    # anti − fixed, best: −1, −1, −2 -> mean −1.3333, sd 0.57735, half 4.30265 × 0.57735 / √3
    anti = gains["anti − fixed"]
    assert anti.best.low == pytest.approx(-1.33333 - 1.43422, abs=1e-4)
    assert anti.best.high == pytest.approx(-1.33333 + 1.43422, abs=1e-4)
    assert anti.last.mean == pytest.approx(-2 / 3)  # last: 0, −1, −1
    # fixed − student alone, last: 3, 4, 5 -> mean 4, sd 1, half 4.30265 / √3 = 2.48414
    alone = gains["fixed − student alone"].last
    assert (alone.mean, alone.sd) == (pytest.approx(4.0), pytest.approx(1.0))
    assert (alone.low, alone.high) == (
        pytest.approx(1.51586, abs=1e-4),
        pytest.approx(6.48414, abs=1e-4),
    )
    assert gains["random − fixed"].best.n == 1 and gains["random − fixed"].best.low is None

    md = render_markdown(report, [])
    assert (
        "| at | adaptive − fixed | +1.50 ± 0.71 | [-4.85, +7.85] | +1.50 ± 0.71 | [-4.85, +7.85] "
        "| 2 (2 unpaired seed(s) dropped) |" in md
    )
    assert (
        "| at | random − fixed | -2.00 | n = 1, no interval | -2.00 | n = 1, no interval "
        "| 1 (2 unpaired seed(s) dropped) |" in md
    )
    assert (
        "| at | anti − fixed | -1.33 ± 0.58 | [-2.77, +0.10] | -0.67 ± 0.58 | [-2.10, +0.77] | 3 |"
        in md
    )
    assert (
        "| at | fixed − student alone | +4.67 ± 1.15 | [+1.80, +7.54] | +4.00 ± 1.00 "
        "| [+1.52, +6.48] | 3 |" in md
    )
    assert "| at | 81.00 ± 1.00 | 84.67 ± 4.73 | +1.50 ± 0.71 |" in md  # the main table
    assert "| -2.00 (n = 1) |" in md  # random − fixed from one pair: never a bare number
    # The test set's noise beside the tables, at the pair's mean best top-1 over its runs.
    best = [max(c) for arm in (FIXED, ADAPTIVE, RANDOM, ANTI) for c in arm.values()]
    mean = sum(best) / len(best)
    se = 100 * math.sqrt(mean / 100 * (1 - mean / 100) / TEST_SIZE)
    assert f"at {mean:.1f} % top-1 on 1,000 test images" in md
    assert f"standard error of one accuracy is {se:.2f} points" in md


def test_gains_in_report_csv_one_column_per_statistic(tmp_path):
    _fabricate(tmp_path)
    report = build_report(tmp_path)
    adaptive = _row(report, "at", "adaptive")
    assert adaptive["gain_base"] == "fixed"
    assert adaptive["gain_best_mean"] == "1.5000"
    assert adaptive["gain_best_sd"] == "0.7071"
    assert adaptive["gain_best_ci95_low"] == "-4.8531"
    assert adaptive["gain_best_ci95_high"] == "7.8531"
    assert (adaptive["gain_pairs"], adaptive["gain_unpaired_seeds"]) == ("2", "2")
    random = _row(report, "at", "random")
    assert (random["gain_best_mean"], random["gain_best_sd"], random["gain_best_ci95_low"]) == (
        "-2.0000",
        "",
        "",
    )
    fixed = _row(report, "at", "fixed")
    assert fixed["gain_base"] == "student alone"
    assert (fixed["gain_best_ci95_low"], fixed["gain_best_ci95_high"]) == ("1.7982", "7.5351")
    assert fixed["test_images"] == "1000"
    assert fixed["test_binomial_se"] == "1.2406"  # sqrt(0.81 × 0.19 / 1000) at the mean 81.00
    single = _row(report, "", "")
    assert single["gain_base"] == "" and single["student"] == "resnet8"


def test_student_alone_with_another_protocol_is_not_paired(tmp_path):
    _fabricate(tmp_path, alone_epochs=3)
    report = build_report(tmp_path)
    labels = [c.label for c in report.cells[0].comparisons()]
    assert "fixed − student alone" not in labels
    assert any("differ from the fixed runs in epochs" in p.message for p in report.problems)


def test_spot_rates_per_epoch_mean_and_sd_over_seeds(tmp_path):
    _fabricate(tmp_path)
    md = render_markdown(build_report(tmp_path), [])
    section = md.split("## Spot rates of the adaptive runs per epoch")[1]
    assert "| epoch | stage1 | logits |" in section
    assert "| 1 | 0.60 ± 0.10 | 1.00 ± 0.00 |" in section
    assert "| 2 | 0.80 ± 0.10 | 1.00 ± 0.00 |" in section


def test_report_command_with_a_student_alone_grid_and_plots(tmp_path, capsys):
    _fabricate(tmp_path)
    grid = write_grid(
        tmp_path / "grid.yaml",
        distillers=["at"],
        modes=["fixed", "adaptive", "random", "anti"],
        seeds=[0, 1, 2, 3],
        overrides=["epochs=2"],
        student_alone="runs/alone/seed{seed}",
    )
    out = tmp_path / "out"
    assert (
        main(["report", str(tmp_path / "runs"), "--grid", str(grid), "--plots", "--out", str(out)])
        == 0
    )
    md = (out / "report.md").read_text()
    assert "| embedded resnet8 | single | 3 |" in md  # the student alone's missing seed 3
    assert "fixed − student alone" in md
    assert (out / "plots" / "gains.png").stat().st_size > 0
    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    (single,) = [r for r in rows if r["kind"] == "single"]
    assert (single["seeds"], single["expected_seeds"], single["missing_seeds"]) == (
        "0 1 2",
        "0 1 2 3",
        "3",
    )
