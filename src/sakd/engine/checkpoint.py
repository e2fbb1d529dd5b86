"""Checkpoints: atomic writes, safe loads (``weights_only=True``), SHA-256 of files."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sakd.errors import SakdError

FORMAT = "sakd-checkpoint-v1"


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Save a checkpoint dict atomically (a reader never sees a partial file)."""
    atomic_write_bytes(path, lambda handle: torch.save({"format": FORMAT, **payload}, handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without running pickled code; errors become one-line :class:`SakdError`."""
    path = Path(path)
    if not path.is_file():
        raise SakdError(f"checkpoint {str(path)!r} does not exist: check the path")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SakdError(
            f"checkpoint {str(path)!r} cannot be loaded safely ({reason[:160]}): it must be a "
            "PyTorch file of tensors and plain containers"
        ) from None
    if not isinstance(data, dict):
        raise SakdError(f"checkpoint {str(path)!r} does not hold a dict of weights")
    return data


def extract_state_dict(data: dict[str, Any], key: str = "student") -> dict[str, torch.Tensor]:
    """The model weights in a checkpoint: sakd's (``modules[key]``), RepDistiller's (``model``) or bare."""
    if data.get("format") == FORMAT:
        return data["modules"][key]
    for name in ("model", "state_dict", "net"):
        if isinstance(data.get(name), dict):
            return data[name]
    if data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return data
    raise SakdError("checkpoint holds no model weights (no 'model' or 'state_dict' entry)")


def load_weights_strict(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``model`` strictly; a mismatch is a one-line error naming ``what``."""
    try:
        model.load_state_dict(state, strict=True)
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
    """A file path, where ``sakd:<relative path>`` names a file shipped inside the package."""
    if ref.startswith(PACKAGE_PREFIX):
        from importlib import resources

        return Path(str(resources.files("sakd").joinpath(ref[len(PACKAGE_PREFIX) :])))
    return Path(ref).expanduser()


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
