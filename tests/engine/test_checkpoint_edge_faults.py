"""Edge cases of ``best.pt`` and ``last.pt``: lost or damaged, past the end, folders, orphans.

A finished run checks its ``best.pt`` when started again (rebuilt from ``last.pt`` when the last
epoch was the best, one line otherwise); ``last.pt`` must be a regular file of an epoch this run
has; the temporary file of a killed metrics truncation is removed at the next start.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sakd.config import load_config
from sakd.engine import faults
from sakd.engine import trainer as trainer_module
from sakd.engine.checkpoint import load_checkpoint, save_checkpoint, sha256_file
from sakd.engine.run import run
from sakd.errors import SakdError

from ..conftest import tiny_overrides

pytestmark = pytest.mark.fault("run-folder")


def _config(out, *extra):
    return load_config("quickstart/student", tiny_overrides(out, *extra))


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".sakd.lock"
    }


def _checkpoints_and_records(folder: Path) -> dict[str, bytes]:
    """:func:`_files` but config.yaml and run.json, which every start rewrites (here with the
    copy's output_dir)."""
    files = _files(folder)
    for rewritten in ("config.yaml", "run.json"):
        files.pop(rewritten)
    return files


def _scripted_top1(monkeypatch, values: list[float]) -> None:
    """Make the evaluations return ``values`` in turn (which epoch is the best is then known)."""
    calls = iter(values)
    monkeypatch.setattr(trainer_module.Trainer, "evaluate", lambda self: (next(calls), 90.0))


def _finished(tmp_path_factory, top1s: list[float]) -> Path:
    """A finished 2-epoch run whose evaluations gave ``top1s``."""
    out = tmp_path_factory.mktemp("finished") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        _scripted_top1(monkeypatch, top1s)
        run(_config(out))
    return out


@pytest.fixture(scope="module")
def last_is_best(tmp_path_factory) -> Path:
    """A finished 2-epoch run whose second (last) epoch is the best."""
    return _finished(tmp_path_factory, [10.0, 20.0])


@pytest.fixture(scope="module")
def first_is_best(tmp_path_factory) -> Path:
    """A finished 2-epoch run whose first epoch is the best."""
    return _finished(tmp_path_factory, [20.0, 10.0])


def _copy(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(folder, out)
    return out


def _damage(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["deleted", "damaged", "stale"])
def test_a_finished_runs_lost_best_pt_is_rebuilt_when_the_last_epoch_was_the_best(
    last_is_best, tmp_path, capsys, how
):
    out = _copy(last_is_best, tmp_path)
    best = out / "checkpoints" / "best.pt"
    expected = load_checkpoint(best)
    if how == "deleted":
        best.unlink()
    elif how == "damaged":
        _damage(best)
    else:  # a finite, loadable best.pt of another epoch (restored from an old copy)
        stale = load_checkpoint(out / "checkpoints" / "last.pt")
        del stale["digest"]
        stale["epoch"] = 1
        save_checkpoint(best, stale)
    summary = run(_config(out))
    assert type(summary).__name__ == "CompleteRunSummary" and summary.best_epoch == 2
    assert "rebuilt" in capsys.readouterr().out
    rebuilt = load_checkpoint(best)
    assert rebuilt["epoch"] == 2 and rebuilt["digest"] == expected["digest"]
    sidecar = (out / "checkpoints" / "best.pt.sha256").read_text().split()[0]
    assert sidecar == sha256_file(best)
    assert _files(out) == _files(last_is_best)  # all as it was
    again = _files(out)
    run(_config(out))  # sound now: nothing changes
    assert _files(out) == again


@pytest.mark.parametrize("how", ["deleted", "damaged", "folder"])
def test_a_finished_runs_lost_best_pt_that_cannot_be_rebuilt_is_one_line(
    first_is_best, tmp_path, how
):
    out = _copy(first_is_best, tmp_path)
    best = out / "checkpoints" / "best.pt"
    if how == "deleted":
        best.unlink()
    elif how == "damaged":
        _damage(best)
    else:
        best.unlink()
        best.mkdir()
    before = _files(out)
    with pytest.raises(SakdError) as caught:
        run(_config(out))
    message = str(caught.value)
    assert "\n" not in message and "best.pt" in message
    if how != "folder":
        assert "cannot be rebuilt: the best epoch was 1 and last.pt holds epoch 2" in message
        assert "resume=false" in message
    else:
        assert "not a regular file" in message
    assert _files(out) == before


def test_a_lost_best_pt_at_resume_is_one_line_before_any_epoch(first_is_best, tmp_path):
    out = _copy(first_is_best, tmp_path)
    (out / "summary.json").unlink()  # not finished: the trainer resumes from last.pt
    (out / "checkpoints" / "best.pt").unlink()
    before = _checkpoints_and_records(out)
    with pytest.raises(SakdError, match="best.pt' is missing and cannot be rebuilt"):
        run(_config(out))
    assert _checkpoints_and_records(out) == before  # no epoch trained, no record written


def test_a_last_pt_past_the_last_epoch_is_refused(last_is_best, tmp_path):
    out = _copy(last_is_best, tmp_path)
    (out / "summary.json").unlink()
    last = out / "checkpoints" / "last.pt"
    data = load_checkpoint(last)
    del data["digest"]
    data["epoch"] = 500
    save_checkpoint(last, data)
    before = _checkpoints_and_records(out)
    with pytest.raises(SakdError, match="epoch 500, which this run does not have"):
        run(_config(out))
    assert _checkpoints_and_records(out) == before


@pytest.mark.parametrize("name", ["last.pt", "best.pt.sha256", "summary.json", "metrics.jsonl"])
def test_a_run_file_that_is_a_folder_is_refused_before_anything_is_written(
    last_is_best, tmp_path, name
):
    out = _copy(last_is_best, tmp_path)
    (out / "summary.json").unlink()
    path = out / ("checkpoints" if name in ("last.pt", "best.pt.sha256") else "") / name
    path.unlink(missing_ok=True)
    path.mkdir()
    (path / "inside").write_text("x")
    before = _files(out)
    with pytest.raises(SakdError, match="not a regular file") as caught:
        run(_config(out))
    assert "\n" not in str(caught.value)
    assert _files(out) == before


def test_a_killed_metrics_truncation_leaves_no_temporary_file(last_is_best, tmp_path):
    out = _copy(last_is_best, tmp_path)
    (out / "summary.json").unlink()  # the next start resumes, and truncates metrics.jsonl
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child, killed inside the write
        os.environ[faults.ENV] = "write:metrics.jsonl@1"
        faults.reset()
        try:
            run(_config(out))
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == -9
    orphans = list(out.glob(".metrics.jsonl.*"))
    assert orphans, "the kill should have left the temporary file"
    run(_config(out))
    assert not list(out.glob(".metrics.jsonl.*"))
    assert (out / "summary.json").is_file()


def test_checkpoints_may_be_a_link_to_a_folder_but_not_a_file(last_is_best, tmp_path):
    out = _copy(last_is_best, tmp_path)
    elsewhere = tmp_path / "scratch"
    (out / "checkpoints").rename(elsewhere)
    (out / "checkpoints").symlink_to(elsewhere)  # checkpoints on other storage: fine
    assert type(run(_config(out))).__name__ == "CompleteRunSummary"
    (out / "checkpoints").unlink()
    (out / "checkpoints").write_text("not a folder")
    with pytest.raises(SakdError, match="is not a folder of this run's checkpoints"):
        run(_config(out))
