"""`sakd report`: hand-computed statistics, the paper's numbers, missing runs and problems."""

from __future__ import annotations

import csv
import io
import math

import pytest

from sakd.cli import main
from sakd.experiments.reference import lookup, paper_name, published_results
from sakd.experiments.report import Stat, build_report, render_csv, write_report

from .conftest import fabricate_run, write_grid

PAIR = "cifar100/resnet32x4-resnet8x4"
# Per seed, test top-1 of three epochs: best and last differ on purpose.
FIXED = {0: [60.0, 70.0, 69.0], 1: [61.0, 72.0, 71.5], 2: [62.0, 77.0, 74.0]}
ADAPTIVE = {0: [60.0, 71.0, 71.0], 1: [60.0, 75.0, 73.0]}
RATES = [[1.0, 1.0, 1.0, 1.0], [0.8, 0.6, 0.9, 1.0], [0.6, 0.4, 0.7, 0.9]]


def _fabricate_tree(root):
    for mode, curves in (("fixed", FIXED), ("adaptive", ADAPTIVE)):
        for seed, curve in curves.items():
            fabricate_run(
                root / f"runs/at-{mode}/seed{seed}",
                PAIR,
                ["distiller.name=at", f"spots.mode={mode}", f"seed={seed}", "epochs=3"],
                curve,
                spot_rates=RATES if mode == "adaptive" else [[1.0] * 4] * 3,
            )
    # One run cut off mid-write, one whose summary claims more than its metrics hold, one unfinished.
    corrupt = fabricate_run(
        root / "runs/at-adaptive/seed2",
        PAIR,
        ["distiller.name=at", "spots.mode=adaptive", "seed=2", "epochs=3"],
        [50.0, 60.0, 65.0],
    )
    text = (corrupt / "metrics.jsonl").read_text()
    (corrupt / "metrics.jsonl").write_text(text[: len(text) - 20])
    fabricate_run(
        root / "runs/kd-fixed/seed0",
        PAIR,
        ["distiller.name=kd", "seed=0", "epochs=3"],
        [50.0, 60.0],
    )
    fabricate_run(
        root / "runs/kd-fixed/seed1",
        PAIR,
        ["distiller.name=kd", "seed=1", "epochs=3"],
        [50.0],
        finished=False,
    )
    fabricate_run(root / "runs/teacher", "cifar100/train/resnet32x4", ["epochs=3"], [70, 78, 79])


@pytest.fixture
def tree(tmp_path):
    _fabricate_tree(tmp_path)
    grid = write_grid(
        tmp_path / "grid.yaml",
        pairs=[PAIR],
        distillers=["at", "kd"],
        modes=["fixed", "adaptive"],
        seeds=[0, 1, 2],
        overrides=["epochs=3"],
    )
    return tmp_path, grid


def _rows(report):
    return list(csv.DictReader(io.StringIO(render_csv(report))))


def _row(rows, distiller, mode):
    (row,) = [r for r in rows if r["distiller"] == distiller and r["mode"] == mode]
    return row


def test_means_and_sample_stds_match_hand_computation(tree):
    root, grid = tree
    rows = _rows(build_report(root, grid=str(grid)))
    fixed, adaptive = _row(rows, "at", "fixed"), _row(rows, "at", "adaptive")
    # best-epoch top-1 of fixed: 70, 72, 77 -> mean 73, sample std sqrt((9 + 1 + 16) / 2)
    assert float(fixed["best_mean"]) == pytest.approx(73.0)
    assert float(fixed["best_std"]) == pytest.approx(math.sqrt(13.0), abs=1e-4)
    # last epoch: 69, 71.5, 74 -> mean 71.5, std 2.5
    assert float(fixed["last_mean"]) == pytest.approx(71.5)
    assert float(fixed["last_std"]) == pytest.approx(2.5)
    assert float(fixed["best_epoch_mean"]) == pytest.approx(2.0)
    # adaptive: best 71, 75 -> 73 ± sqrt(8); seed 2 is corrupt and does not count
    assert adaptive["n"] == "2" and adaptive["seeds"] == "0 1"
    assert float(adaptive["best_mean"]) == pytest.approx(73.0)
    assert float(adaptive["best_std"]) == pytest.approx(math.sqrt(8.0), abs=1e-4)
    assert adaptive["missing_seeds"] == "2" and adaptive["expected_seeds"] == "0 1 2"
    # gain paired by seed: (71 - 70, 75 - 72) = (1, 3) -> 2 ± sqrt(2); last: (2, 1.5)
    assert float(adaptive["gain_vs_fixed_best_mean"]) == pytest.approx(2.0)
    assert float(adaptive["gain_vs_fixed_best_std"]) == pytest.approx(math.sqrt(2.0), abs=1e-4)
    assert float(adaptive["gain_vs_fixed_last_mean"]) == pytest.approx(1.75)
    assert adaptive["gain_n"] == "2"
    # the paper's R1 AT numbers for resnet32x4 -> resnet8x4 and our distance to them
    assert adaptive["paper_table"] == "R1"
    assert float(fixed["paper_top1"]) == 75.16 and float(adaptive["paper_top1"]) == 75.42
    assert float(fixed["ours_best_minus_paper"]) == pytest.approx(73.0 - 75.16)
    assert float(fixed["paper_teacher_top1"]) == 79.42
    assert fixed["teacher_sha256"] == "ab" * 32 and float(fixed["teacher_top1"]) == 79.0
    assert fixed["precision"] == "fp32" and fixed["device"] == "cuda (Test GPU)"
    # last-epoch spot rates of the adaptive runs, averaged over seeds
    # by the spots' names, as metrics.jsonl records them
    assert adaptive["spot_rates_last_epoch"] == (
        "stage1=0.6000 stage2=0.4000 stage3=0.7000 logits=0.9000"
    )


@pytest.mark.fault("run-folder")
def test_missing_runs_and_problems_are_reported_not_dropped(tree):
    root, grid = tree
    report = build_report(root, grid=str(grid))
    rows = _rows(report)
    kd_fixed, kd_adaptive = _row(rows, "kd", "fixed"), _row(rows, "kd", "adaptive")
    assert kd_fixed["n"] == "0" and kd_fixed["missing_seeds"] == "0 1 2"
    assert kd_adaptive["n"] == "0" and kd_adaptive["best_mean"] == ""
    kinds = {p.path.relative_to(root).as_posix(): p.kind for p in report.problems}
    assert kinds == {
        "runs/at-adaptive/seed2": "corrupt",
        "runs/kd-fixed/seed0": "partial",
        "runs/kd-fixed/seed1": "unfinished",
    }
    md_path, csv_path = write_report(report)
    text = md_path.read_text()
    assert csv_path.read_text() == render_csv(report)
    assert "## Problems" in text and "not JSON" in text and "1 of 3 epochs done" in text
    assert "## Missing runs" in text
    assert "| cifar100 resnet32x4 -> resnet8x4 at | adaptive | 2 |" in text
    assert "| at | 73.00 ± 3.61 | 73.00 ± 2.83 | +2.00 ± 1.41 |" in text
    assert "sample standard deviation" in text and "n − 1" in text
    assert "chosen on the test split" in text
    assert "| epochs | 3 (6 runs) |" in text  # the teacher run and the five distillation runs
    assert "| cifar100 | resnet32x4 | 79.00 | 79.00 | 3 (1 run) | n=1 |" in text


def test_without_a_grid_counts_are_shown_as_n(tree):
    root, _ = tree
    text = write_report(build_report(root))[0].read_text()
    assert "n=3 / n=2" in text
    assert "## Missing runs" not in text


def test_a_cell_mixing_protocols_is_flagged(tmp_path):
    for seed, epochs in ((0, 2), (1, 3)):
        fabricate_run(
            tmp_path / f"r{seed}",
            PAIR,
            ["distiller.name=at", f"seed={seed}", f"epochs={epochs}"],
            [50.0] * epochs,
        )
    (problem,) = build_report(tmp_path).problems
    assert problem.kind == "mixed" and "epochs" in problem.message


def test_report_command_and_bad_folder(tree, capsys):
    root, grid = tree
    assert main(["report", str(root), "--grid", str(grid)]) == 0
    assert "3 problem(s)" in capsys.readouterr().out
    assert (root / "report.md").is_file() and (root / "report.csv").is_file()
    assert main(["report", str(root / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sakd: error:") and "\n" not in err


def test_stat_edge_cases():
    assert Stat.of([]).text() == "–"
    assert Stat.of([71.234]).text() == "71.23"
    assert Stat.of([1.0, 2.0, 3.0]) == Stat(3, 2.0, 1.0)


def test_paper_names_map_to_ours():
    assert paper_name("WRN_40_2") == "wrn_40_2" and paper_name("Fitnets") == "fitnet"
    assert paper_name("MobileNetV2") == "mobilenetv2" and paper_name("ResNet50") == "resnet50"
    assert paper_name("ShuffleNetV1") == "shufflev1" and paper_name("resnet8x4") == "resnet8x4"
    table = published_results()
    assert len(table) == 149
    assert {k[3] for k in table} == {
        "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ft", "nst", "crd"
    }  # fmt: skip
    fitnet = lookup("cifar100", "wrn_40_2", "wrn_16_2", "fitnet")
    assert (fitnet.table, fitnet.fixed, fitnet.adaptive) == ("R1", 75.06, 75.26)
    assert lookup("tiny-imagenet", "vgg13", "mobilenetv2", "crd").table == "R3"
    assert "misprint" not in (lookup("cifar100", "vgg13", "vgg8", "at").note or "")
    assert "-0.24" in lookup("cifar100", "vgg13", "mobilenetv2", "vid").note
    kd = lookup("cifar100", "resnet32x4", "resnet8x4", "kd")
    assert (kd.fixed, kd.adaptive) == (73.33, None)
    assert lookup("embedded", "resnet32", "resnet8", "at") is None
