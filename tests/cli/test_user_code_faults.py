"""The user's own code and files fail as one line: factory modules, checksum sidecars, blank data."""

from __future__ import annotations

import shutil
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from sakd.cli import main
from sakd.engine.checkpoint import resolve_path

from ..conftest import tiny_overrides

GOOD_NET = textwrap.dedent(
    """
    from torch import nn


    def factory(num_classes):
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(num_classes))
    """
)
MODULES = {
    "raises at import": (
        "raise RuntimeError('no GPU license found')\n",
        "RuntimeError: no GPU license found",
    ),
    "syntax error": ("def factory(num_classes:\n    pass\n", "SyntaxError: "),
    "missing dependency": (
        "import a_package_nobody_has\n",
        "ModuleNotFoundError: No module named 'a_package_nobody_has'",
    ),
    "exits at import": (
        "import sys\nsys.exit('run me as a script')\n",
        "SystemExit: run me as a script",
    ),
    "raises its own BaseException": (
        "class Abort(BaseException):\n    pass\n\n\nraise Abort('licence server down')\n",
        "(Abort: licence server down)",
    ),
    "raises without a message": ("raise RuntimeError()\n", "failed (RuntimeError): fix"),
    "factory raises": (
        "def factory(num_classes):\n    raise ValueError('width must be even')\n",
        "model factory 'faultymod_{case}:factory' failed (ValueError: width must be even)",
    ),
    "factory raises a TypeError of its own": (
        "def factory(num_classes):\n    return [] + None\n",
        "model factory 'faultymod_{case}:factory' failed (TypeError: can only concatenate",
    ),
}


def _one_line(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sakd: error:") and "\n" not in err, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.fault("user-code")
@pytest.mark.parametrize("case", list(MODULES))
def test_a_failing_factory_module_is_one_line(case, tmp_path, capsys, monkeypatch):
    source, needle = MODULES[case]
    module = f"faultymod_{case.replace(' ', '_')}"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    argv = ["train", "quickstart/student", *tiny_overrides(out, f"model.name={module}:factory")]
    try:
        err = _one_line(capsys, argv, needle.format(case=case.replace(" ", "_")))
    finally:
        sys.modules.pop(module, None)
    if not case.startswith("factory"):
        assert f"importing module {module!r} failed" in err
    else:  # the factory takes num_classes: its own error is not blamed on the signature
        assert "must accept num_classes" not in err
    assert not out.exists()


@pytest.mark.fault("teacher")
@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "holds no SHA-256"),
        (b"   \n", "holds no SHA-256"),
        (b"not-a-digest  teacher.pt\n", "holds no SHA-256"),
        (bytes(range(256)), "holds no SHA-256"),
        (b"0" * 64 + b"  teacher.pt\n", "has SHA-256"),  # well formed, but another file's
    ],
)
def test_a_bad_teacher_checksum_file_is_one_line(content, needle, tmp_path, capsys):
    teacher = tmp_path / "teacher.pt"
    shutil.copyfile(resolve_path("sakd:assets/quickstart_teacher.pt"), teacher)
    (tmp_path / "teacher.pt.sha256").write_bytes(content)
    out = tmp_path / "run"
    argv = ["distill", "quickstart", *tiny_overrides(out, f"teacher.checkpoint={teacher}")]
    _one_line(capsys, argv, needle, "teacher.pt")
    assert not out.exists()


@pytest.mark.fault("teacher")
@pytest.mark.parametrize("kind", ["folder", "dangling link"])
def test_a_teacher_checksum_file_that_is_no_file_is_one_line(kind, tmp_path, capsys):
    teacher = tmp_path / "teacher.pt"
    shutil.copyfile(resolve_path("sakd:assets/quickstart_teacher.pt"), teacher)
    sidecar = tmp_path / "teacher.pt.sha256"
    if kind == "folder":
        sidecar.mkdir()
    else:
        sidecar.symlink_to(tmp_path / "gone")
    out = tmp_path / "run"
    argv = ["distill", "quickstart", *tiny_overrides(out, f"teacher.checkpoint={teacher}")]
    _one_line(capsys, argv, "is not a readable file", "teacher.pt.sha256")
    assert not out.exists()


@pytest.mark.fault("data")
def test_blank_images_are_refused_where_their_statistics_are_computed(tmp_path, capsys):
    for split, count in (("train", 4), ("val", 2)):
        for name in ("a", "b"):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for k in range(count):
                black = np.zeros((8, 8, 3), np.uint8)
                Image.fromarray(black).save(tmp_path / "data" / split / name / f"{k}.png")
    out = tmp_path / "run"
    data = ["data.name=folder", f"data.root={tmp_path / 'data'}", "data.image_size=8"]
    argv = ["train", "quickstart/student", *tiny_overrides(out, *data)]
    _one_line(capsys, argv, "no spread to normalise by", "channel 0 is 0 everywhere", "train")
    assert not out.exists()


DISTILLERS = {
    "no spot_role": (
        "class Mine(Distiller):\n    name = 'mine'\n",
        "distiller 'faultydist:Mine' sets no class attribute 'spot_role'",
    ),
    "no name": (
        "class Mine(Distiller):\n    spot_role = 'stages'\n",
        "distiller 'faultydist:Mine' sets no class attribute 'name'",
    ),
    "__init__ raises": (
        "class Mine(Distiller):\n    name = 'mine'\n    spot_role = 'stages'\n\n"
        "    def __init__(self, setup):\n        raise ValueError('needs 4 spots')\n",
        "distiller faultydist:Mine failed (ValueError: needs 4 spots)",
    ),
}


@pytest.mark.fault("user-code")
@pytest.mark.parametrize("case", list(DISTILLERS))
def test_a_faulty_distiller_class_is_one_line(case, tmp_path, capsys, monkeypatch):
    body, needle = DISTILLERS[case]
    (tmp_path / "faultydist.py").write_text("from sakd.losses import Distiller\n\n\n" + body)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    weights = ["distiller.loss_weight=1", "loss.ce_weight=1", "loss.kd_weight=0"]
    argv = ["distill", "quickstart", *tiny_overrides(out, "distiller.name=faultydist:Mine")]
    try:
        _one_line(capsys, [*argv, *weights, "spots.routing_ce_weight=1", "epochs=1"], needle)
    finally:
        sys.modules.pop("faultydist", None)
    assert not out.exists()
