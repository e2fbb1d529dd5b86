"""The run folder's guards: one process at a time, divergence markers, the saved configuration.

* **Lock.** A run holds ``fcntl.flock`` on ``<output_dir>/.sakd.lock`` from before it touches the
  folder until it ends; a second run on the same folder is refused with one line naming the
  holder (pid, host, start time). The kernel releases the lock when its process dies, however it
  dies, so a lock left by a killed run never blocks the next one.
* **Divergence.** When training diverges (non-finite losses or parameters) the trainer writes
  ``diverged.json`` beside the checkpoints. While it is there, a resume may change the keys of
  :data:`CHANGEABLE_AFTER_DIVERGENCE` (the learning rate, the precision); every other change is
  refused as usual. The first checkpoint saved after that removes the marker.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import warnings
from pathlib import Path
from typing import Any

import yaml

from sakd.engine.checkpoint import atomic_write_text, os_error_line
from sakd.errors import SakdError

LOCK_NAME = ".sakd.lock"
DIVERGED_NAME = "diverged.json"
CHANGEABLE_AFTER_DIVERGENCE = frozenset({"lr", "precision"})


class RunDirLock:
    """An exclusive lock on a run folder, held until :meth:`release` (or the process's end)."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def release(self) -> None:
        """Release the lock (the lock file stays: removing it would race with the next run)."""
        if self._fd is None:
            return
        import fcntl

        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def lock_run_dir(run_dir: Path) -> RunDirLock:
    """Create ``run_dir`` if needed and lock it; one line when another process holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return RunDirLock(None)
    path = run_dir / LOCK_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise SakdError(os_error_line(path, exc)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown process"
        os.close(fd)
        raise SakdError(
            f"output_dir {str(run_dir)!r} is in use by another sakd run ({holder}): wait for it "
            "to finish (or stop it), or choose another output_dir"
        ) from None
    except OSError as exc:  # e.g. a file system without locks
        warnings.warn(f"cannot lock {path} ({exc.strerror}); running unlocked", stacklevel=2)
        os.close(fd)
        return RunDirLock(None)
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n".encode(), 0)
    return RunDirLock(fd)


def read_saved_config(path: Path) -> dict[str, Any]:
    """The mapping in a run folder's ``config.yaml``; one line when the file is damaged."""

    def damaged(why: str) -> SakdError:
        return SakdError(
            f"{str(path)!r} {why}: the run folder is damaged; delete that file to resume from "
            "checkpoints/last.pt (whose own configuration is still checked), or start over with "
            "resume=false"
        )

    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise damaged("is not a text file") from None
    except OSError as exc:
        raise SakdError(f"cannot read {str(path)!r} ({exc.strerror}): check the folder") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise damaged("is not valid YAML") from None
    except RecursionError:
        raise damaged("is nested too deeply") from None
    if not isinstance(data, dict):
        raise damaged("is not a mapping of keys to values")
    return data


def write_divergence(run_dir: Path, details: dict[str, Any]) -> None:
    """Record that the run in ``run_dir`` diverged (allows a resume with another lr)."""
    atomic_write_text(run_dir / DIVERGED_NAME, json.dumps(details, indent=2) + "\n")


def clear_divergence(run_dir: Path) -> None:
    """Forget a divergence (a checkpoint was saved since)."""
    (run_dir / DIVERGED_NAME).unlink(missing_ok=True)


def refused_changes(run_dir: Path, changed: list[str]) -> list[str]:
    """The changed config keys that a resume of ``run_dir`` may not make.

    All of them normally; after a divergence, all but :data:`CHANGEABLE_AFTER_DIVERGENCE`.
    """
    if (run_dir / DIVERGED_NAME).is_file():
        return [key for key in changed if key not in CHANGEABLE_AFTER_DIVERGENCE]
    return list(changed)
