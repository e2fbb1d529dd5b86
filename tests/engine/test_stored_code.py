"""Code named only by a stored config (a checkpoint, a run folder) is never imported unasked.

``sakd eval``, ``sakd export``, ``sakd inspect``, ``sakd report`` and a resume read configurations
that a file holds, not the user's command line. A ``package.module:factory`` name there is imported
(its module's code runs) only when the user confirms it: ``--trust-code``, or (``eval``)
``model.name=`` given again. The module here writes a marker file when imported.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sakd.cli import main
from sakd.config import dump_config, load_config
from sakd.engine.checkpoint import FORMAT

from ..conftest import tiny_overrides

pytestmark = pytest.mark.fault("stored-code")

MODULE = textwrap.dedent(
    """
    import pathlib

    import torch
    from torch import nn

    pathlib.Path(__file__).with_name("IMPORTED").write_text("module code ran")


    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.layer1 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
            self.layer2 = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
            self.fc = nn.Linear(16, num_classes)

        def forward(self, x):
            x = self.layer2(self.layer1(torch.relu(self.conv1(x))))
            return self.fc(x.mean(dim=(2, 3)))


    def factory(num_classes):
        return Net(num_classes)
    """
)
NAME = "storedcode_mod:factory"
DISTILLER = textwrap.dedent(
    """

    from sakd.losses import Distiller


    class Distiller(Distiller):
        name = "stored_code_distiller"
    """
)


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """``storedcode_mod.py`` in the current directory, which is also on ``sys.path``."""
    (tmp_path / "storedcode_mod.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("storedcode_mod", None)


def _forget(work: Path) -> Path:
    """Unload the module and remove its marker: a new import would run its code again."""
    sys.modules.pop("storedcode_mod", None)
    marker = work / "IMPORTED"
    marker.unlink(missing_ok=True)
    return marker


def _refused(capsys, argv: list[str], name: str = NAME) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sakd: error:") and "\n" not in err, err
    assert name in err and "--trust-code" in err, err
    return err


@pytest.fixture
def trained(work, capsys) -> Path:
    """A finished run of the user's factory (the user named it: its import is expected)."""
    run = work / "run"
    assert (
        main(
            ["train", "quickstart/student", *tiny_overrides(run, "epochs=1", f"model.name={NAME}")]
        )
        == 0
    )
    capsys.readouterr()
    return run


def test_eval_and_export_import_a_stored_factory_only_when_confirmed(work, trained, capsys):
    marker = _forget(work)
    checkpoint = str(trained / "checkpoints" / "last.pt")
    out = work / "student.pt"

    err = _refused(capsys, ["eval", checkpoint])
    assert "model.name=" + NAME in err
    _refused(capsys, ["export", str(trained), "--out", str(out), "--checkpoint", "last"])
    assert not marker.exists() and not out.exists()

    assert main(["eval", checkpoint, "--trust-code"]) == 0
    assert marker.exists()
    marker = _forget(work)
    assert main(["eval", checkpoint, f"model.name={NAME}"]) == 0
    assert marker.exists()
    marker = _forget(work)
    assert (
        main(["export", str(trained), "--out", str(out), "--checkpoint", "last", "--trust-code"])
        == 0
    )
    assert marker.exists() and out.is_file()


def test_report_and_a_resume_never_import_a_stored_factory(work, trained, capsys):
    marker = _forget(work)
    assert main(["report", str(work)]) == 0
    assert "1 finished run" in capsys.readouterr().out
    # Another config on the same folder: the stored one (and last.pt's) is compared, not built.
    argv = ["train", "quickstart/student", *tiny_overrides(trained, "epochs=1", "resume=true")]
    assert main(argv) == 2
    assert "different configuration" in capsys.readouterr().err
    assert not marker.exists()


def _crafted_run(work: Path, *overrides: str) -> Path:
    """A run folder whose config.yaml and checkpoint name ``overrides`` (e.g. a module's factory)."""
    run = work / "crafted"
    cfg = load_config("quickstart", [f"output_dir={run}", "spots.mode=adaptive", *overrides])
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(cfg))
    checkpoint = {"format": FORMAT, "config": cfg.model_dump(mode="json"), "epoch": 1}
    for name in ("best.pt", "last.pt"):
        torch.save({**checkpoint, "modules": {}}, run / "checkpoints" / name)
    return run


def test_inspect_imports_a_stored_teacher_factory_only_when_confirmed(work, capsys):
    run = _crafted_run(work, f"teacher.name={NAME}")
    marker = _forget(work)
    _refused(capsys, ["inspect", str(run)])
    assert not marker.exists() and not (run / "inspect").exists()
    # Confirmed, the module is imported (the crafted run then fails on its teacher checkpoint).
    main(["inspect", str(run), "--trust-code"])
    assert marker.exists()


def test_a_stored_distiller_class_is_not_imported_by_inspect_report_or_resume(work, capsys):
    distiller = "storedcode_mod:Distiller"
    (work / "storedcode_mod.py").write_text(MODULE + DISTILLER)
    weights = ["loss.ce_weight=1", "loss.kd_weight=0", "distiller.loss_weight=1"]
    run = _crafted_run(work, f"distiller.name={distiller}", *weights, "spots.routing_ce_weight=1")
    marker = _forget(work)
    err = _refused(capsys, ["inspect", str(run)], distiller)
    assert "storedcode_mod" in err
    assert main(["report", str(work)]) == 0
    capsys.readouterr()
    assert "| `crafted` | unfinished |" in (work / "report.md").read_text()
    argv = ["distill", "quickstart", f"output_dir={run}", "spots.mode=adaptive", "epochs=1"]
    assert main(argv) == 2
    assert "different configuration" in capsys.readouterr().err
    assert not marker.exists()
    assert main(["report", str(work), "--trust-code"]) == 0
    assert marker.exists()


def test_the_python_entry_points_take_trust_code(work, trained):
    from sakd.engine.evaluate_checkpoint import evaluate_checkpoint
    from sakd.errors import SakdError
    from sakd.export import export

    marker = _forget(work)
    with pytest.raises(SakdError, match="trust_code=True"):
        export(trained, work / "s.pt", "last")
    with pytest.raises(SakdError, match="trust_code=True"):
        evaluate_checkpoint(str(trained / "checkpoints" / "last.pt"), [])
    assert not marker.exists()
    assert export(trained, work / "s.pt", "last", trust_code=True).is_file()
    assert marker.exists()


def test_a_stored_logit_distiller_class_is_not_imported_unasked(work, capsys):
    logit = "storedcode_mod:Distiller"
    (work / "storedcode_mod.py").write_text(MODULE + DISTILLER)
    run = _crafted_run(work, f"loss.logit_distiller={logit}", "loss.kd_weight=1")
    marker = _forget(work)
    _refused(capsys, ["inspect", str(run)], logit)
    assert main(["report", str(work)]) == 0
    capsys.readouterr()
    argv = ["distill", "quickstart", f"output_dir={run}", "spots.mode=adaptive", "epochs=1"]
    assert main(argv) == 2
    assert "different configuration" in capsys.readouterr().err
    assert not marker.exists()
