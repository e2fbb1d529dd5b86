"""The `sakd` command: listings, runs, and bad input as one line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sakd.cli import main

from ..conftest import tiny_overrides


def _fails_cleanly(capsys, argv, needle, out_dir=None):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("sakd: error:") and needle in err, err
    assert "Traceback" not in err
    if out_dir is not None:
        assert not out_dir.exists()


def test_listings(capsys):
    assert main(["models"]) == 0
    models = capsys.readouterr().out.split()
    assert {"resnet8x4", "resnet32x4", "wrn_40_2", "vgg13", "mobilenetv2", "shufflev1"} <= set(
        models
    )
    assert main(["recipes"]) == 0
    assert "quickstart" in capsys.readouterr().out.split()
    assert main(["distillers"]) == 0
    listing = capsys.readouterr().out
    for name in (
        "kd",
        "fitnet",
        "at",
        "sp",
        "cc",
        "vid",
        "rkd",
        "pkt",
        "ab",
        "ft",
        "fsp",
        "nst",
        "crd",
        "dkd",
    ):
        assert f"\n{name} " in "\n" + listing, name


def test_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "quickstart/student", *tiny_overrides(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out / "checkpoints/best.pt"), "data.test_limit=64"]) == 0
    result = json.loads(capsys.readouterr().out)
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert result["test_top1"] == pytest.approx(max(m["test_top1"] for m in metrics))


@pytest.mark.fault("config")
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    _fails_cleanly(capsys, ["train", str(tmp_path / "missing.yaml")], "neither a file")
    _fails_cleanly(
        capsys,
        ["train", "quickstart/student", f"output_dir={out}", "model.name=resnet9000"],
        "unknown model",
        out,
    )
    _fails_cleanly(
        capsys,
        ["train", "quickstart/student", f"output_dir={out}", "data.name=imagenet9"],
        "unknown dataset",
        out,
    )
    _fails_cleanly(
        capsys,
        [
            "train",
            "quickstart/student",
            f"output_dir={out}",
            "data.name=cifar100",
            f"data.root={tmp_path / 'nodata'}",
        ],
        "cifar",
        out,
    )
    _fails_cleanly(
        capsys,
        ["train", "quickstart/student", f"output_dir={out}", "colour=blue"],
        "unknown key 'colour'",
        out,
    )
    _fails_cleanly(capsys, ["eval", str(tmp_path / "none.pt")], "does not exist")
    _fails_cleanly(
        capsys,
        ["distill", "quickstart", f"output_dir={out}", "distiller.name=magic"],
        "unknown distiller",
        out,
    )
    _fails_cleanly(
        capsys,
        ["distill", "quickstart", f"output_dir={out}", f"teacher.checkpoint={tmp_path / 'no.pt'}"],
        "does not exist",
        out,
    )
    _fails_cleanly(
        capsys,
        ["distill", "quickstart", f"output_dir={out}", "spots.mode=often"],
        "spots.mode",
        out,
    )


@pytest.mark.fault("teacher")
def test_eval_refuses_another_architecture(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "quickstart/student", *tiny_overrides(out, "epochs=1")]) == 0
    capsys.readouterr()
    _fails_cleanly(
        capsys,
        ["eval", str(out / "checkpoints/last.pt"), "model.name=resnet14"],
        "does not fit the architecture",
    )


@pytest.mark.fault("teacher")
def test_distill_refuses_a_teacher_of_another_architecture(tmp_path, capsys):
    out = tmp_path / "never"
    _fails_cleanly(
        capsys,
        ["distill", "quickstart", f"output_dir={out}", "teacher.name=resnet56"],
        "does not fit the architecture",
        out,
    )


def test_console_script_exit_status(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sakd", "train", "quickstart/student", "epochs=zero"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("sakd: error:") and "Traceback" not in proc.stderr
