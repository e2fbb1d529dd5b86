"""The run folder's one door: every file sakd writes into ``output_dir`` is read and written here.

A run folder holds ``config.yaml`` (:meth:`RunFolder.read_config`), ``run.json``
(:class:`RunInfo`), ``summary.json`` (:class:`RunSummary`), ``metrics.jsonl`` / ``pretrain.jsonl``
(:class:`~sakd.engine.records.EpochRecord`, :meth:`RunFolder.read_records`) and
``checkpoints/{last,best}.pt`` (:class:`TrainingCheckpoint`). Readers (report, inspect, export,
eval, the quick-start, the API's ``Run``) go through :class:`RunFolder`; nobody reads these files
by ad-hoc string keys.

* **Lock.** A run holds ``fcntl.flock`` on ``<output_dir>/.sakd.lock`` from before it touches the
  folder until it ends; a second run on the same folder is refused with one line naming the
  holder (pid, host, start time). The kernel releases the lock when its process dies, however it
  dies, so a lock left by a killed run never blocks the next one. The lock file is opened without
  following links and must be a regular file (a link placed there never redirects the write).
* **Divergence.** When training diverges (non-finite losses or parameters) the trainer writes
  ``diverged.json`` beside the checkpoints. While it is there, a resume may change the keys of
  :data:`CHANGEABLE_AFTER_DIVERGENCE` (the learning rate, the precision); every other change is
  refused as usual. The first checkpoint saved after that removes the marker.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import socket
import warnings
from pathlib import Path
from typing import Any

import yaml

from sakd.config import RunConfig, dump_config, validate_config
from sakd.data.contract import InputContract
from sakd.engine.checkpoint import (
    FORMAT,
    atomic_write_text,
    check_regular_file,
    extract_state_dict,
    load_checkpoint,
    open_regular_file,
    os_error_line,
    recorded_sha256,
    remove_orphans,
    save_checkpoint,
    sha256_file,
)
from sakd.engine.records import EpochRecord
from sakd.engine.records import read_records as read_record_file
from sakd.errors import SakdError, SakdWarning

CONFIG_NAME = "config.yaml"
INFO_NAME = "run.json"
SUMMARY_NAME = "summary.json"
METRICS_NAME = "metrics.jsonl"
PRETRAIN_NAME = "pretrain.jsonl"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINTS = ("best", "last")
LOCK_NAME = ".sakd.lock"
DIVERGED_NAME = "diverged.json"
BEST_SHA256_NAME = "best.pt.sha256"
# Every file sakd writes into a run folder (``checkpoints/`` apart), and into ``checkpoints/``:
# each must be a regular file (no link, no folder) and a kill's temporary copies of each are
# removed at the next start (:meth:`RunFolder.open_files`).
RUN_FILES = (
    CONFIG_NAME,
    INFO_NAME,
    SUMMARY_NAME,
    METRICS_NAME,
    PRETRAIN_NAME,
    DIVERGED_NAME,
    LOCK_NAME,
)
CHECKPOINT_FILES = ("last.pt", "best.pt", BEST_SHA256_NAME)
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
    except OSError as exc:
        raise SakdError(os_error_line(path, exc)) from None
    fd = open_regular_file(path, os.O_RDWR | os.O_CREAT)
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
        warnings.warn(
            f"cannot lock {path} ({exc.strerror}); running unlocked", SakdWarning, stacklevel=2
        )
        os.close(fd)
        return RunDirLock(None)
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n".encode(), 0)
    return RunDirLock(fd)


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


@dataclasses.dataclass
class RunSummary:
    """What a finished run reports (``summary.json``; ``best_epoch`` 1-based, as in ``metrics.jsonl``).

    A distillation run with ``baseline: true`` also records the top-1s of the student trained
    alone with the same budget and seed (``baseline_best_top1``, ``baseline_last_top1``; None
    otherwise), and ``summary.json`` the gains of distilling over it (``gain_best``,
    ``gain_last``, in points).
    """

    best_top1: float
    best_epoch: int
    last_top1: float
    last_top5: float
    epochs: int
    seconds: float
    baseline_best_top1: float | None = None
    baseline_last_top1: float | None = None

    @property
    def gain_best(self) -> float | None:
        """Best top-1 minus the student alone's best top-1 (points; None without a baseline)."""
        alone = self.baseline_best_top1
        return None if alone is None else self.best_top1 - alone

    @property
    def gain_last(self) -> float | None:
        """Last top-1 minus the student alone's last top-1 (points; None without a baseline)."""
        alone = self.baseline_last_top1
        return None if alone is None else self.last_top1 - alone

    def to_json(self) -> str:
        """``summary.json``'s text: valid JSON always (a number that is not finite is ``null``)."""
        values = dict(self.__dict__)
        if self.baseline_best_top1 is None and self.baseline_last_top1 is None:
            del values["baseline_best_top1"], values["baseline_last_top1"]
        else:
            values.update(gain_best=self.gain_best, gain_last=self.gain_last)
        values = {
            k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in values.items()
        }
        return json.dumps(values, indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RunSummary:
        """The summary in ``summary.json``'s text (``null`` back to NaN); ``ValueError`` if damaged."""
        data = json.loads(text)
        try:
            values = {}
            for field in dataclasses.fields(RunSummary):
                if field.default is dataclasses.MISSING:  # required: null is a non-finite number
                    value = data[field.name]
                    values[field.name] = math.nan if value is None else value
                else:  # optional (the baseline's): absent or null is None
                    values[field.name] = data.get(field.name)
            return cls(**values)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a run summary ({type(exc).__name__})") from None


@dataclasses.dataclass(frozen=True)
class SpotFact:
    """One spot of a distillation run in ``run.json``: its name and both nets' features there."""

    name: str
    student: str
    teacher: str | None = None


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """The facts about a run in ``run.json`` (device, precision, data sizes, teacher, spots, provenance).

    ``values`` is the mapping as written (the file's format); the properties read it typed, with
    ``None`` for a fact the file does not hold (an older sakd, a single-network run).
    """

    values: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        """``run.json``'s text."""
        return json.dumps(self.values, indent=2) + "\n"

    def _get(self, key: str, kind: type | tuple[type, ...]) -> Any:
        value = self.values.get(key)
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    @property
    def teacher_top1(self) -> float | None:
        """The teacher's test top-1 (%) as the run evaluated it."""
        value = self._get("teacher_top1", (int, float))
        return None if value is None else float(value)

    @property
    def teacher_sha256(self) -> str | None:
        """SHA-256 of the teacher's weights (file, or state dict of a module object)."""
        return self._get("teacher_sha256", str)

    @property
    def teacher_published_top1(self) -> float | None:
        """The teacher's published test top-1 (%) from the reference tables, when they hold it."""
        value = self._get("teacher_published_top1", (int, float))
        return None if value is None else float(value)

    @property
    def teacher_weights(self) -> str | None:
        """Which file layout and module names the teacher's weights were recognised in."""
        return self._get("teacher_weights", str)

    @property
    def precision(self) -> str | None:
        """The precision the run used (``fp32``, ``bf16``, ...)."""
        return self._get("precision", str)

    @property
    def device_label(self) -> str | None:
        """The device the run used, with its name: ``cuda:0 (NVIDIA H200)``."""
        device = self._get("device", str)
        name = self._get("device_name", str)
        if device is None:
            return None
        return f"{device} ({name})" if name else device

    @property
    def torch(self) -> str | None:
        """The torch version that ran it."""
        return self._get("torch", str)

    @property
    def train_size(self) -> int | None:
        """Training images."""
        return self._get("train_size", int)

    @property
    def test_size(self) -> int | None:
        """Test images."""
        return self._get("test_size", int)

    @property
    def resolved_weights(self) -> dict[str, dict[str, Any]]:
        """Every resolved loss weight by config key: ``{"value": ..., "source": ...}`` (empty if none)."""
        weights = self.values.get("resolved_weights")
        if not isinstance(weights, dict):
            return {}
        return {k: v for k, v in weights.items() if isinstance(v, dict) and "value" in v}

    @property
    def input(self) -> InputContract | None:
        """The input contract the run evaluated on (normalisation, size, class names; ``input``).

        None for a run folder of an older sakd, which did not record it.
        """
        values = self.values.get("input")
        try:
            return None if values is None else InputContract.from_dict(values)
        except ValueError:
            return None

    @property
    def spots(self) -> list[SpotFact]:
        """The distillation spots in order (empty for a single-network run)."""
        spots = self.values.get("spots")
        if not isinstance(spots, list):
            return []
        return [
            SpotFact(str(s["name"]), str(s.get("student", s["name"])), s.get("teacher"))
            for s in spots
            if isinstance(s, dict) and "name" in s
        ]


@dataclasses.dataclass(frozen=True)
class TrainingCheckpoint:
    """A checkpoint file read back (sakd's ``last.pt`` / ``best.pt``, or another tool's weights).

    ``config`` is the configuration a sakd checkpoint carries (None for another tool's file);
    ``epoch`` / ``phase_index`` where training stood when it was saved (1-based epochs done).
    """

    path: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> TrainingCheckpoint:
        """Load ``path`` safely (no pickled code; damage is one line)."""
        path = Path(path)
        return cls(path, load_checkpoint(path))

    @property
    def is_sakd(self) -> bool:
        """True for a checkpoint sakd wrote (it carries its format tag)."""
        return self.data.get("format") == FORMAT

    @property
    def config(self) -> dict[str, Any] | None:
        """The stored configuration mapping (None when the file carries none)."""
        config = self.data.get("config") if self.is_sakd else None
        return config if isinstance(config, dict) else None

    def require_config(self) -> dict[str, Any]:
        """The stored configuration; one line when the file is not a sakd checkpoint."""
        config = self.config
        if config is None:
            raise SakdError(f"{str(self.path)!r} is not a sakd checkpoint (no recorded config)")
        return config

    @property
    def model_config(self) -> dict[str, Any]:
        """The stored ``model`` section (empty when absent)."""
        model = (self.config or {}).get("model")
        return model if isinstance(model, dict) else {}

    @property
    def epoch(self) -> int | None:
        """Epochs of its phase done when it was saved (1-based; None when not recorded)."""
        epoch = self.data.get("epoch")
        return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None

    @property
    def modules(self) -> dict[str, Any]:
        """The state dict of every checkpointed module by name (``student``, ``selector``...)."""
        modules = self.data.get("modules")
        return modules if isinstance(modules, dict) else {}

    def state_dict(self, key: str = "student") -> dict[str, Any]:
        """The weights of ``key`` (sakd's), or of the model in another tool's file."""
        return extract_state_dict(self.data, key)

    @property
    def evaluated_module(self) -> str:
        """The name of the module whose weights were evaluated (``evaluated``; ``student`` when unset).

        A run that evaluates another state than the trained student (e.g. an EMA copy) names it
        here; export and reload take that one.
        """
        name = self.data.get("evaluated") if self.is_sakd else None
        return name if isinstance(name, str) and name in self.modules else "student"

    def evaluated_state_dict(self) -> dict[str, Any]:
        """The weights that were evaluated (:attr:`evaluated_module`): what an export carries."""
        return self.state_dict(self.evaluated_module)

    @property
    def test_top1(self) -> float | None:
        """Test top-1 (%) of these weights (the evaluation of the epoch they were saved at)."""
        last_eval = self.data.get("last_eval")
        top1 = last_eval[0] if isinstance(last_eval, list | tuple) and last_eval else None
        return top1 if isinstance(top1, float) and math.isfinite(top1) else None


class RunFolder:
    """A run folder (``output_dir``): where each file lies, and reading and writing them."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        """``config.yaml``."""
        return self.path / CONFIG_NAME

    @property
    def info_path(self) -> Path:
        """``run.json``."""
        return self.path / INFO_NAME

    @property
    def summary_path(self) -> Path:
        """``summary.json``."""
        return self.path / SUMMARY_NAME

    @property
    def checkpoint_dir(self) -> Path:
        """``checkpoints/``."""
        return self.path / CHECKPOINT_DIR

    def records_path(self, pretrain: bool = False) -> Path:
        """``metrics.jsonl`` (main phase) or ``pretrain.jsonl`` (pre-training stages)."""
        return self.path / (PRETRAIN_NAME if pretrain else METRICS_NAME)

    def checkpoint_path(self, which: str) -> Path:
        """``checkpoints/best.pt`` or ``checkpoints/last.pt``."""
        if which not in CHECKPOINTS:
            raise SakdError(f"checkpoint must be 'best' or 'last', not {which!r}")
        return self.checkpoint_dir / f"{which}.pt"

    def has_config(self) -> bool:
        """True when the folder holds a run's ``config.yaml``."""
        return self.config_path.is_file()

    def is_finished(self) -> bool:
        """True when the run ran to its end (``summary.json`` written)."""
        return self.summary_path.is_file()

    # ---------------------------------------------------------------------------- reading
    def read_config_mapping(self) -> dict[str, Any]:
        """The mapping in ``config.yaml`` as written; one line when the file is damaged."""
        path = self.config_path
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise self._damaged("is not a text file") from None
        except OSError as exc:
            raise SakdError(
                f"cannot read {str(path)!r} ({exc.strerror}): check the folder (is it the "
                "output_dir of a run?)"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            raise self._damaged("is not valid YAML") from None
        except RecursionError:
            raise self._damaged("is nested too deeply") from None
        if not isinstance(data, dict):
            raise self._damaged("is not a mapping of keys to values")
        return data

    def read_config(self, stored: bool = True) -> RunConfig:
        """``config.yaml`` validated; ``stored`` (sakd wrote it): renamed keys read under their new names."""
        data = self.read_config_mapping()
        try:
            return validate_config(data, source=str(self.config_path), stored=stored)
        except RecursionError:
            raise self._damaged("is nested too deeply") from None

    def _damaged(self, why: str) -> SakdError:
        return SakdError(
            f"{str(self.config_path)!r} {why}: the run folder is damaged; delete that file to "
            "resume from checkpoints/last.pt (whose own configuration is still checked), or start "
            "over with resume=false"
        )

    def read_info(self) -> RunInfo:
        """``run.json`` (an empty :class:`RunInfo` when it is absent or unreadable)."""
        try:
            values = json.loads(self.info_path.read_bytes().decode("utf-8"))
        except (OSError, ValueError, RecursionError):
            return RunInfo()
        return RunInfo(values if isinstance(values, dict) else {})

    def read_summary(self) -> RunSummary | None:
        """``summary.json`` (None when it is absent or damaged: the run is then not finished)."""
        try:
            return RunSummary.from_json(self.summary_path.read_bytes().decode("utf-8"))
        except (OSError, ValueError, RecursionError):
            return None

    def read_divergence(self) -> dict[str, Any] | None:
        """``diverged.json``: where training diverged (None when it has not since the last save).

        A damaged file is an empty mapping (the run diverged; where is unknown).
        """
        try:
            details = json.loads((self.path / DIVERGED_NAME).read_bytes().decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError):
            return {}
        return details if isinstance(details, dict) else {}

    def holds_summary(self, summary: RunSummary) -> bool:
        """True when ``summary.json`` holds exactly ``summary`` (byte for byte)."""
        try:
            return self.summary_path.read_bytes() == summary.to_json().encode()
        except OSError:
            return False

    def read_records(self, pretrain: bool = False) -> list[EpochRecord]:
        """Every record of ``metrics.jsonl`` (or ``pretrain.jsonl``); one line when unreadable."""
        return read_record_file(self.records_path(pretrain))

    def read_checkpoint(self, which: str) -> TrainingCheckpoint:
        """``checkpoints/<which>.pt``; one line when the run has not saved it (yet)."""
        path = self.checkpoint_path(which)
        if not path.is_file():
            other = "last" if which == "best" else "best"
            hint = f" (try --checkpoint {other})" if self.checkpoint_path(other).is_file() else ""
            raise SakdError(
                f"{str(path)!r} does not exist: the run has not finished an epoch yet{hint}"
            )
        return TrainingCheckpoint.load(path)

    # ------------------------------------------------------------------------ the files
    def files(self) -> list[Path]:
        """Every file sakd writes into this folder (:data:`RUN_FILES`, :data:`CHECKPOINT_FILES`)."""
        return [self.path / name for name in RUN_FILES] + [
            self.checkpoint_dir / name for name in CHECKPOINT_FILES
        ]

    def open_files(self) -> None:
        """Before a run writes here (its lock held): refuse what is not a run's file, tidy up.

        One line when one of :meth:`files` is a link, a folder or another non-regular file (or
        ``checkpoints/`` is not a folder), before anything is written; then the temporary files
        of atomic writes that a kill interrupted are removed.
        """
        # (``checkpoints/`` may be a link to a folder elsewhere, e.g. on scratch storage.)
        if self.checkpoint_dir.exists() and not self.checkpoint_dir.is_dir():
            raise SakdError(
                f"{str(self.checkpoint_dir)!r} is not a folder of this run's checkpoints: "
                "remove it (or choose another output_dir)"
            )
        for path in self.files():
            check_regular_file(path)
        remove_orphans(self.path, RUN_FILES)
        remove_orphans(self.checkpoint_dir, CHECKPOINT_FILES)

    # ------------------------------------------------------------------------- best.pt
    def best_problem(self, epoch: int | None = None) -> str | None:
        """Why ``checkpoints/best.pt`` cannot be trusted (None when it can).

        It is missing, fails to load (damaged: its own checksum), does not match
        ``best.pt.sha256`` (when present), or (with ``epoch``) was saved after another epoch.
        """
        path = self.checkpoint_path("best")
        if not path.is_file():
            return "is missing"
        try:
            recorded = recorded_sha256(path)
            data = load_checkpoint(path)
        except SakdError:
            return "is damaged"
        if recorded is not None and recorded != sha256_file(path):
            return f"does not match {BEST_SHA256_NAME}"
        if epoch is not None and data.get("epoch") != epoch:
            return f"holds epoch {data.get('epoch')}, not the best epoch {epoch}"
        return None

    def rebuild_best(self, last: dict[str, Any], problem: str, certify: bool) -> str:
        """Write ``best.pt`` from ``last``'s contents (last.pt, the best epoch); what was done.

        ``certify``: the run is finished, so ``best.pt.sha256`` is rewritten as well.
        """
        best = self.checkpoint_path("best")
        save_checkpoint(best, {k: v for k, v in last.items() if k not in ("format", "digest")})
        if certify:
            self.certify_best()
        return (
            f"rebuilt {str(best)!r} from last.pt (best.pt {problem}; the last epoch, "
            f"{last.get('epoch')}, is the best)"
        )

    def best_lost(self, problem: str, best_epoch: int, last_epoch: int | None) -> SakdError:
        """The line for a ``best.pt`` that is untrustworthy and cannot be rebuilt from last.pt."""
        held = (
            "last.pt is unreadable" if last_epoch is None else f"last.pt holds epoch {last_epoch}"
        )
        return SakdError(
            f"{str(self.checkpoint_path('best'))!r} {problem} and cannot be rebuilt: the best "
            f"epoch was {best_epoch} and {held}; restore best.pt from a copy, use checkpoints/"
            "last.pt instead (--checkpoint last), or start the run over with resume=false"
        )

    def repair_finished_best(self, best_epoch: int) -> str | None:
        """A finished run's ``best.pt`` (epoch ``best_epoch``, 1-based) checked; rebuilt if it can be.

        Returns what was rebuilt (None when ``best.pt`` is sound); :class:`SakdError` when it is
        missing or damaged and ``last.pt`` is not the best epoch.
        """
        if best_epoch < 1:
            return None
        problem = self.best_problem(epoch=best_epoch)
        if problem is None:
            return None
        try:
            last = load_checkpoint(self.checkpoint_path("last"))
        except SakdError:
            raise self.best_lost(problem, best_epoch, None) from None
        epoch = last.get("epoch")
        if epoch != best_epoch or last.get("best_epoch") != best_epoch - 1:
            raise self.best_lost(problem, best_epoch, epoch if isinstance(epoch, int) else None)
        return self.rebuild_best(last, problem, certify=True)

    # ---------------------------------------------------------------------------- writing
    def certify_best(self) -> None:
        """Write ``best.pt.sha256`` (``sha256sum`` format) for the final ``best.pt``, if any."""
        best = self.checkpoint_path("best")
        if best.is_file():
            atomic_write_text(
                self.checkpoint_dir / BEST_SHA256_NAME, f"{sha256_file(best)}  {best.name}\n"
            )

    def write_config(self, config: RunConfig) -> None:
        """Write the resolved ``config.yaml``."""
        atomic_write_text(self.config_path, dump_config(config))

    def write_info(self, info: RunInfo) -> None:
        """Write ``run.json``."""
        atomic_write_text(self.info_path, info.to_json())

    def write_summary(self, summary: RunSummary) -> None:
        """Write ``summary.json``."""
        atomic_write_text(self.summary_path, summary.to_json())
