"""A run folder under faults: damage, OS errors, a second process, divergence, orphans, best.pt.

Every case is one :class:`SakdError` saying what to do, and the last good checkpoint survives.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from sakd.config import load_config
from sakd.engine import checkpoint as checkpoint_module
from sakd.engine import trainer as trainer_module
from sakd.engine.checkpoint import load_checkpoint, save_checkpoint, sha256_file
from sakd.engine.run import run
from sakd.engine.rundir import DIVERGED_NAME, lock_run_dir
from sakd.errors import SakdError

from ..conftest import stop_after_saves, tiny_overrides


def _config(out, *extra):
    return load_config("quickstart/student", tiny_overrides(out, *extra))


@pytest.fixture(scope="module")
def half_done(tmp_path_factory) -> Path:
    """A run folder of 2 epochs interrupted after its first epoch (to copy per test)."""
    out = tmp_path_factory.mktemp("half") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        stop_after_saves(monkeypatch)
        with pytest.raises(KeyboardInterrupt):
            run(_config(out))
    return out


def _copy(half_done: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(half_done, out)
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".sakd.lock"
    }


# ----------------------------------------------------------------- 4. damaged run folder
@pytest.mark.fault("interrupted")
def test_half_a_metrics_line_from_a_kill_is_dropped_at_resume(half_done, tmp_path):
    out = _copy(half_done, tmp_path)
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 1, "phase": "ma')
    run(_config(out))
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]


@pytest.mark.fault("run-folder")
@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("metrics.jsonl", bytes(range(256)) * 8, "metrics file is damaged"),
        ("metrics.jsonl", b'{"epoch": 0\n{"epoch": 1}\n', "metrics file is damaged"),
        ("config.yaml", bytes(range(256)) * 8, "run folder is damaged"),
        ("config.yaml", b"epochs: [2\nlr: {", "run folder is damaged"),
        ("config.yaml", b"- 1\n- 2\n", "run folder is damaged"),
    ],
)
def test_damaged_run_files_are_one_line(half_done, tmp_path, name, content, needle):
    out = _copy(half_done, tmp_path)
    (out / name).write_bytes(content)
    last = (out / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(SakdError, match=needle) as caught:
        run(_config(out))
    assert "\n" not in str(caught.value) and "resume=false" in str(caught.value)
    assert (out / "checkpoints" / "last.pt").read_bytes() == last


@pytest.mark.fault("run-folder")
def test_last_pt_without_modules_is_one_line(half_done, tmp_path):
    out = _copy(half_done, tmp_path)
    path = out / "checkpoints" / "last.pt"
    data = load_checkpoint(path)
    del data["modules"], data["digest"]
    save_checkpoint(path, data)
    with pytest.raises(SakdError, match="not a complete sakd training checkpoint"):
        run(_config(out))


@pytest.mark.fault("run-folder")
def test_a_changed_tensor_in_last_pt_is_refused(half_done, tmp_path):
    out = _copy(half_done, tmp_path)
    path = out / "checkpoints" / "last.pt"
    data = torch.load(path, weights_only=True)
    weight = next(iter(data["modules"]["student"].values()))
    weight.add_(1.0)  # what a flipped bit does, in a file that still loads
    torch.save(data, path)
    with pytest.raises(SakdError, match="is damaged"):
        run(_config(out))


@pytest.mark.fault("run-folder")
def test_a_bit_flipped_last_pt_is_refused_in_one_line(half_done, tmp_path):
    out = _copy(half_done, tmp_path)
    path = out / "checkpoints" / "last.pt"
    # Flip a bit inside a tensor's stored bytes (a byte in the zip's padding changes nothing).
    with zipfile.ZipFile(path) as archive:
        entry = max(
            (i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size
        )
    raw = bytearray(path.read_bytes())
    offset = entry.header_offset
    name_len = int.from_bytes(raw[offset + 26 : offset + 28], "little")
    extra_len = int.from_bytes(raw[offset + 28 : offset + 30], "little")
    raw[offset + 30 + name_len + extra_len + entry.file_size // 2] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(SakdError) as caught:
        run(_config(out))
    message = str(caught.value)
    assert "last.pt" in message and "\n" not in message and "weights_only" not in message


# ------------------------------------------------------------------------ 5. OS errors
@pytest.mark.fault("os-error")
def test_a_full_disk_is_one_line_and_keeps_last_pt(half_done, tmp_path, monkeypatch):
    out = _copy(half_done, tmp_path)
    last = out / "checkpoints" / "last.pt"
    before = last.read_bytes()
    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").split("/")[-1].startswith(".last.pt."):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(checkpoint_module.os, "fsync", fsync)
    with pytest.raises(SakdError, match="No space left on device.*free some disk space"):
        run(_config(out))
    assert last.read_bytes() == before
    assert not [p for p in last.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.fault("os-error")
def test_an_unwritable_output_dir_is_one_line(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    out.chmod(0o500)
    if os.access(out, os.W_OK):  # root writes anyway: make the first write fail as it would
        real_open = os.open

        def refuse(path, *args, **kwargs):
            if str(path).startswith(str(out)):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(SakdError, match="Permission denied.*make the folder writable"):
        run(_config(out))
    out.chmod(0o700)


@pytest.mark.fault("os-error")
def test_an_output_dir_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SakdError, match="is a file, not a folder"):
        run(_config(tmp_path / "file" / "run"))


# ------------------------------------------------------------------------------ 6. lock
@pytest.mark.fault("run-folder")
def test_a_second_run_on_a_locked_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    held = lock_run_dir(out)
    try:
        with pytest.raises(SakdError, match=rf"in use by another sakd run \(pid {os.getpid()}"):
            run(_config(out, "epochs=1"))
        assert sorted(p.name for p in out.iterdir()) == [".sakd.lock"]
    finally:
        held.release()
    (out / ".sakd.lock").write_text("pid 999999 on elsewhere, since long ago\n")  # stale
    run(_config(out, "epochs=1"))
    assert (out / "summary.json").is_file()


# ---------------------------------------------------------------------------- 7. orphans
@pytest.mark.fault("interrupted")
def test_temporary_files_of_a_killed_write_are_removed_at_the_next_start(half_done, tmp_path):
    out = _copy(half_done, tmp_path)
    orphans = [
        out / "checkpoints" / ".last.pt.k2j4h1x0",
        out / "checkpoints" / ".best.pt.0a9z8y7x",
        out / ".summary.json.abcdefgh",
    ]
    for orphan in orphans:
        orphan.write_bytes(b"partial")
    (out / ".keep-me").write_text("not ours")
    run(_config(out))
    assert not any(p.exists() for p in orphans)
    assert (out / ".keep-me").exists()


# ---------------------------------------------------------------- 1. best.pt and last.pt
@pytest.mark.fault("interrupted")
def test_a_stale_best_pt_is_rewritten_from_last_pt_at_resume(tmp_path):
    out = tmp_path / "run"
    run(_config(out, "epochs=1"))
    best, last = out / "checkpoints" / "best.pt", out / "checkpoints" / "last.pt"
    # What an older sakd left after a kill between its last.pt and best.pt writes: last.pt at
    # the new best epoch, best.pt older, no summary yet.
    stale = load_checkpoint(last)
    del stale["digest"]
    stale.update(epoch=0, best_top1=-1.0, best_epoch=-1)
    stale["modules"] = {k: {n: t * 0 for n, t in m.items()} for k, m in stale["modules"].items()}
    save_checkpoint(best, stale)
    (out / "summary.json").unlink()
    summary = run(_config(out, "epochs=1"))
    repaired, final = load_checkpoint(best), load_checkpoint(last)
    assert repaired["epoch"] == final["epoch"] == 1
    for key, value in final["modules"]["student"].items():
        assert torch.equal(value, repaired["modules"]["student"][key]), key
    assert (out / "checkpoints" / "best.pt.sha256").read_text().split()[0] == sha256_file(best)
    assert summary.best_epoch == 1  # 1-based, as in metrics.jsonl


# ------------------------------------------------------------------------- 2. divergence
def _diverge_at(monkeypatch, epoch: int) -> None:
    original = trainer_module.Trainer._train_epoch

    def train_epoch(self, phase, index, ep, optimizers):
        record = original(self, phase, index, ep, optimizers)
        if ep == epoch:
            with torch.no_grad():
                next(self.task.student.parameters()).fill_(float("inf"))
        return record

    monkeypatch.setattr(trainer_module.Trainer, "_train_epoch", train_epoch)


@pytest.mark.fault("divergence")
@pytest.mark.parametrize(
    ("schedule", "lrs"),
    # step: the milestone 150 of 240 falls on epoch 2 of 2; cosine: half-way down at epoch 2
    [("step", [0.05, 0.005 * 0.1]), ("cosine", [0.05, pytest.approx(0.0025)])],
)
def test_non_finite_parameters_stop_the_run_and_a_lower_lr_resumes_it(
    tmp_path, monkeypatch, schedule, lrs
):
    out = tmp_path / "run"
    _diverge_at(monkeypatch, epoch=1)  # finite losses, an infinite weight after epoch 2
    with pytest.raises(SakdError) as caught:
        run(_config(out, f"schedule.name={schedule}"))
    message = str(caught.value)
    assert "not finite" in message and "checkpoints/last.pt (after train epoch 1)" in message
    assert "lr=0.005" in message and "\n" not in message
    kept = load_checkpoint(out / "checkpoints" / "last.pt")
    assert kept["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in kept["modules"]["student"].values())
    assert not (out / "summary.json").exists() and (out / DIVERGED_NAME).is_file()
    monkeypatch.undo()

    with pytest.raises(SakdError, match="batch_size differ"):  # only lr/precision may change
        run(_config(out, "lr=0.005", "batch_size=16", f"schedule.name={schedule}"))
    summary = run(_config(out, "lr=0.005", f"schedule.name={schedule}"))  # the fix is accepted
    final = load_checkpoint(out / "checkpoints" / "last.pt")
    assert final["epoch"] == 2 and final["config"]["lr"] == 0.005
    assert final["config_changes"] == [{"at_epoch": 1, "phase_index": 0, "lr": [0.05, 0.005]}]
    assert not (out / DIVERGED_NAME).exists()
    assert "lr: 0.005" in (out / "config.yaml").read_text()
    assert summary.epochs == 2
    # The schedule continues from the new lr (rebuilt for it and advanced to the saved epoch).
    records = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["lr"] for r in records] == lrs
    assert final["schedulers"]["student"]["base_lrs"] == [0.005]
    with pytest.raises(SakdError, match="lr differ"):  # and exact resume is back in force
        run(_config(out, "lr=0.05", f"schedule.name={schedule}"))


@pytest.mark.fault("divergence")
@pytest.mark.parametrize("lr", ["lr=.inf", "lr=1e999", "lr=nan"])
def test_non_finite_config_numbers_are_refused(tmp_path, lr):
    with pytest.raises(SakdError, match="key 'lr': Input should be a finite number"):
        _config(tmp_path / "never", lr)


@pytest.mark.fault("divergence")
def test_a_huge_lr_never_ends_as_a_successful_run(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SakdError, match="training diverged"):
        run(_config(out, "lr=1e6", "data.train_limit=64", "precision=fp32", "epochs=3"))
    last = out / "checkpoints" / "last.pt"
    if last.exists():
        kept = load_checkpoint(last)
        for module in kept["modules"].values():
            assert all(torch.isfinite(t).all() for t in module.values() if t.is_floating_point())
    assert not (out / "summary.json").exists()


# --------------------------------------------------------------------- 3. finished runs
@pytest.mark.fault("divergence")
def test_summary_json_is_valid_json_without_nan(tmp_path):
    out = tmp_path / "run"
    run(_config(out, "epochs=1"))
    (out / "summary.json").unlink()  # killed before the summary: finished on the next start
    summary = run(_config(out, "epochs=1"))

    def refuse(constant):
        raise AssertionError(f"summary.json holds {constant}")

    stored = json.loads((out / "summary.json").read_text(), parse_constant=refuse)
    assert stored["last_top1"] == summary.last_top1 and stored["seconds"] > 0
    before = _files(out)
    again = run(_config(out, "epochs=1"))
    assert type(again).__name__ == "CompleteRunSummary" and again.last_top1 == summary.last_top1
    assert _files(out) == before
