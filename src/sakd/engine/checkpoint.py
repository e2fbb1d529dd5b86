"""Checkpoints: atomic writes, safe loads (``weights_only=True``), SHA-256 of files.

Every checkpoint carries a ``digest``: the SHA-256 of its own contents (tensors with their dtype
and shape, and every plain value), computed when it is saved and checked when it is loaded, so a
damaged file (a flipped bit, a truncated copy) is refused instead of resumed or evaluated. Files
are written to a temporary name beside the target (``.<name>.<random>``), synced and renamed over
it: a kill at any moment leaves either the old or the new file, and the temporary files a kill
leaves behind are removed when the next run starts in the folder (:func:`remove_orphans`).
"""

from __future__ import annotations

import errno
import glob
import hashlib
import io
import os
import re
import stat
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sakd.engine.faults import fault_point
from sakd.errors import SakdError

FORMAT = "sakd-checkpoint-v1"
DIGEST_KEY = "digest"


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, then rename it over ``path``.

    An OS error (read-only folder, full disk, a file where a folder should be) is one
    :class:`SakdError`; ``path`` is then left as it was.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise SakdError(os_error_line(path, exc)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        fault_point(f"write:{path.name}")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise SakdError(os_error_line(path, exc)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def os_error_line(path: Path, exc: OSError) -> str:
    """One line for an OS error while writing ``path``: what happened and what to do."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some disk space (or choose an output_dir on another disk)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the folder writable or choose another output_dir"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "a part of the path is a file, not a folder: choose another output_dir"
    else:
        fix = "check the folder and the disk"
    kept = "; the previous file is unchanged" if path.exists() else ""
    return f"cannot write {str(path)!r} ({reason}): {fix}{kept}"


def open_regular_file(path: Path, flags: int) -> int:
    """``os.open`` of a file sakd writes in place, never through a link; one line otherwise.

    The file is opened with ``O_NOFOLLOW`` (a symbolic link there is refused, so a link placed in a
    run folder never redirects a write to a file outside it) and must be a regular file.
    """
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags | nofollow | getattr(os, "O_NONBLOCK", 0), 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP or path.is_symlink():
            raise SakdError(_not_regular(path, "a symbolic link")) from None
        raise SakdError(os_error_line(path, exc)) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SakdError(_not_regular(path, "not a regular file"))
    return fd


def check_regular_file(path: Path) -> None:
    """One line when ``path`` is a symbolic link or another non-regular file (absent is fine)."""
    if path.is_symlink():
        raise SakdError(_not_regular(path, "a symbolic link"))
    if path.exists() and not path.is_file():
        raise SakdError(_not_regular(path, "not a regular file"))


def _not_regular(path: Path, what: str) -> str:
    return (
        f"{str(path)!r} is {what}: sakd writes only regular files of its own in a run folder; "
        "remove it (or choose another output_dir)"
    )


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to the regular file ``path`` (created if absent, never through a link)."""
    fd = open_regular_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    data = text.encode()
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError as exc:
        raise SakdError(os_error_line(path, exc)) from None
    finally:
        os.close(fd)


def remove_orphans(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """Delete the temporary files (``.<name>.*``) that a killed atomic write left in ``folder``.

    ``names``: the files written there (the run folder's list). Only call it while no other
    process writes there (the run folder's lock is held).
    """
    removed = []
    if not folder.is_dir():
        return removed
    for name in names:
        for orphan in folder.glob(f".{glob.escape(name)}.*"):
            if orphan.is_file() and not orphan.is_symlink() and len(orphan.name) > len(name) + 2:
                orphan.unlink(missing_ok=True)
                removed.append(orphan)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Save a checkpoint dict atomically (a reader never sees a partial file), with its digest.

    It is serialised in memory first, so a failing disk raises an ``OSError`` (one line) rather
    than torch's stream-writer error.
    """
    content = {"format": FORMAT, **payload}
    content[DIGEST_KEY] = content_digest(content)
    buffer = io.BytesIO()
    torch.save(content, buffer)
    atomic_write_bytes(path, lambda handle: handle.write(buffer.getbuffer()))


def content_digest(data: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's contents (every entry but ``digest``), tensors by their bytes."""
    digest = hashlib.sha256()

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}:".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            digest.update(f"D{len(value)}:".encode())
            for key, item in value.items():
                digest.update(f"{type(key).__name__}:{key!r}=".encode())
                walk(item)
        elif isinstance(value, list | tuple):
            digest.update(f"{type(value).__name__}{len(value)}:".encode())
            for item in value:
                walk(item)
        else:
            digest.update(f"{type(value).__name__}:{value!r};".encode())

    walk({k: v for k, v in data.items() if k != DIGEST_KEY})
    return digest.hexdigest()


def _load_failure(exc: Exception) -> str:
    """The reason a safe load failed, without torch's advice to load unsafely."""
    text = str(exc).strip()
    if "WeightsUnpickler error:" in text:
        lines = [x.strip() for x in text.split("WeightsUnpickler error:", 1)[1].splitlines()]
        text = next((x for x in lines if x), "content that is not tensors or plain containers")
    else:
        text = text.splitlines()[0] if text else type(exc).__name__
        text = text.split(". ")[0]
    if "weights_only" in text:
        text = type(exc).__name__
    return text[:160]


def refuse_folder(path: Path, what: str) -> None:
    """:class:`SakdError` when ``path``, named as a checkpoint file (``what``), is a folder."""
    if path.is_dir():
        best = path / "checkpoints" / "best.pt"
        example = str(best) if best.is_file() else "RUN/checkpoints/best.pt"
        raise SakdError(
            f"{what} {str(path)!r} is a folder: give a checkpoint file (for a run folder: "
            f"{example})"
        )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without running pickled code; errors become one-line :class:`SakdError`.

    A checkpoint that carries a digest (every one sakd writes) is refused when its contents do
    not match it.
    """
    path = Path(path)
    refuse_folder(path, "checkpoint")
    if not path.is_file():
        raise SakdError(f"checkpoint {str(path)!r} does not exist: check the path")
    try:
        with warnings.catch_warnings():  # a refusal follows anyway: one line, not torch's two
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise SakdError(
            f"checkpoint {str(path)!r} cannot be loaded safely ({_load_failure(exc)}): it must be "
            "an undamaged PyTorch file of tensors and plain containers"
        ) from None
    if not isinstance(data, dict):
        raise SakdError(f"checkpoint {str(path)!r} does not hold a dict of weights")
    stored = data.get(DIGEST_KEY)
    if stored is not None and stored != content_digest(data):
        raise SakdError(
            f"checkpoint {str(path)!r} is damaged: its contents do not match the checksum saved "
            "in it; restore the file from a copy (or, for a run's last.pt, start the run over "
            "with resume=false)"
        )
    return data


# The entries RepDistiller's train_teacher.py saves beside 'model' (ckpt_epoch_N.pth: epoch and
# accuracy; <model>_best.pth: epoch and best_acc; <model>_last.pth: opt, which no safe load reads).
REPDISTILLER_ENTRIES = frozenset({"epoch", "model", "accuracy", "best_acc", "optimizer", "opt"})


def extract_state_dict(data: dict[str, Any], key: str = "student") -> dict[str, torch.Tensor]:
    """The model weights in a checkpoint: sakd's (``modules[key]``), RepDistiller's (``model``) or bare."""
    return extract_weights(data, key)[0]


def extract_weights(
    data: dict[str, Any], key: str = "student"
) -> tuple[dict[str, torch.Tensor], str]:
    """The model weights in a checkpoint and a description of the layout they were found in.

    Layouts: a sakd checkpoint (``modules[key]``); RepDistiller's / mdistiller's
    ``{"epoch", "model", "accuracy" or "best_acc", "optimizer"}``; a ``"model"``, ``"state_dict"``
    or ``"net"`` wrapper; a bare state dict. The student of a sakd run with ``ema.decay`` > 0 is
    its moving average (``ema.student``): the network that was evaluated, selected as best and is
    exported.
    """
    if data.get("format") == FORMAT:
        modules = data.get("modules")
        state = modules.get(key) if isinstance(modules, dict) else None
        layout = f"a sakd checkpoint (modules[{key!r}], epoch {data.get('epoch', '?')})"
        ema = data.get("ema")
        if key == "student" and isinstance(ema, dict):
            state = ema.get("student")
            layout = (
                f"a sakd checkpoint (the student's moving average, epoch {data.get('epoch', '?')})"
            )
    else:
        wrapper = next(
            (name for name in ("model", "state_dict", "net") if isinstance(data.get(name), dict)),
            None,
        )
        state = data if wrapper is None else data[wrapper]
        if wrapper is None:
            layout = "a bare state dict"
        elif wrapper == "model" and data.keys() <= REPDISTILLER_ENTRIES:
            layout = f"a RepDistiller/mdistiller checkpoint ({_entries(data)})"
        else:
            layout = f"a {{{wrapper!r}: state dict}} wrapper"
    if (
        isinstance(state, dict)
        and state
        and all(isinstance(k, str) for k in state)
        and any(isinstance(v, torch.Tensor) for v in state.values())
    ):
        return state, layout
    raise SakdError(
        f"checkpoint holds no {key} weights (a 'modules' entry of sakd's, or a 'model' or "
        "'state_dict' mapping of names to tensors): is it a model checkpoint?"
    )


def _entries(data: dict[str, Any]) -> str:
    """``epoch 240, accuracy 79.42`` and the other entries of a RepDistiller checkpoint, in one line."""
    parts = []
    for name in data:
        value = data[name]
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        parts.append(f"{name} {value:g}" if isinstance(value, int | float) else name)
    return ", ".join(parts)


def load_weights_strict(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``model`` strictly; a mismatch is a one-line error naming ``what``."""
    try:
        model.load_state_dict(state, strict=True)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise SakdError(
            f"{what} does not hold a state dict of tensors ({type(exc).__name__}): is it a model "
            "checkpoint?"
        ) from None
    except RuntimeError as exc:
        text = str(exc)
        missing = text.count("Missing key") > 0
        unexpected = text.count("Unexpected key") > 0
        shape = "size mismatch" in text
        kinds = [
            k
            for k, flag in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", shape),
            )
            if flag
        ]
        raise SakdError(
            f"{what} does not fit the architecture ({', '.join(kinds) or 'mismatch'}): "
            "check that the checkpoint was trained for this model name and number of classes"
        ) from None


PACKAGE_PREFIX = "sakd:"


def resolve_path(ref: str) -> Path:
    """A file path, where ``sakd:<relative path>`` names a file shipped inside the package.

    A ``sakd:`` path must stay inside the package (``sakd:../x`` or ``sakd:/abs`` is one line).
    """
    if ref.startswith(PACKAGE_PREFIX):
        from importlib import resources

        root = Path(str(resources.files("sakd"))).resolve()
        relative = ref[len(PACKAGE_PREFIX) :]
        path = (root / relative).resolve()
        if Path(relative).is_absolute() or not path.is_relative_to(root):
            raise SakdError(
                f"{ref!r} leaves the sakd package: a {PACKAGE_PREFIX} path names a file shipped "
                f"with sakd (e.g. {PACKAGE_PREFIX}assets/...); give other files by their own path"
            )
        return root / relative
    return Path(ref).expanduser()


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


SHA256_SUFFIX = ".sha256"


def recorded_sha256(path: Path) -> str | None:
    """The SHA-256 that ``<path>.sha256`` (``sha256sum`` format) records; None without that file.

    A sidecar that cannot be read, is empty or does not start with 64 hex digits is one line.
    """
    sidecar = path.with_name(path.name + SHA256_SUFFIX)
    if not sidecar.exists() and not sidecar.is_symlink():
        return None
    if not sidecar.is_file():  # a folder, or a link to nothing: the checksum cannot be checked
        raise SakdError(
            f"checksum file {str(sidecar)!r} is not a readable file (a folder, or a link to "
            f"nothing): replace it with the output of `sha256sum {path.name}`, or delete it"
        )
    try:
        text = sidecar.read_bytes()[:4096].decode("ascii")
    except OSError as exc:
        raise SakdError(
            f"cannot read checksum file {str(sidecar)!r} ({exc.strerror or exc}): check its "
            "permissions, or delete it"
        ) from None
    except UnicodeDecodeError:
        text = ""
    words = text.split()
    if not words or re.fullmatch(r"[0-9a-fA-F]{64}", words[0]) is None:
        raise SakdError(
            f"checksum file {str(sidecar)!r} holds no SHA-256 (expected a line like "
            f"`<64 hex digits>  {path.name}`): rewrite it with `sha256sum {path.name} > "
            f"{sidecar.name}` if {path.name} is the file you trust, or delete it"
        )
    return words[0].lower()
