"""Decode image files to one uint8 array, and cache the result next to the data.

Decoding tens of thousands of JPEGs takes minutes, so the decoded (N, 3, S, S) array is written to
``<data folder>/.sakd-cache/<split>-<S>px-<fingerprint>.npz`` on first load (temporary file +
rename) and read back afterwards. The fingerprint hashes every file's relative path, size and
modification time, so adding, removing or editing an image invalidates the cache. A data folder
that cannot be written is decoded every time, with a warning.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from sakd.errors import SakdError

CACHE_FOLDER = ".sakd-cache"


def _decode_failure(path: Path, error: BaseException) -> SakdError:
    """The one line for an image file Pillow cannot read (too large, damaged, not an image)."""
    if isinstance(error, Image.DecompressionBombError):
        return SakdError(
            f"image {path} is too large to decode safely (a decompression bomb?): delete or "
            "replace the file"
        )
    if isinstance(error, MemoryError):
        return SakdError(f"image {path} does not fit in memory: delete or replace the file")
    return SakdError(f"cannot decode image {path} ({error}): delete or replace the file")


# What Pillow raises for a file it cannot read (DecompressionBombError is not an OSError).
_DECODE_ERRORS = (
    Image.DecompressionBombError,
    MemoryError,
    UnidentifiedImageError,
    OSError,
    ValueError,
    SyntaxError,  # raised by some of Pillow's plugins for malformed headers
)


def read_rgb(path: Path) -> Image.Image:
    """One image file decoded to an RGB PIL image; :class:`SakdError` when it cannot be."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except _DECODE_ERRORS as error:
        raise _decode_failure(path, error) from None


def check_header(path: Path) -> None:
    """Read only the header of ``path``: a format Pillow knows, a size it will decode."""
    try:
        with Image.open(path):
            pass
    except _DECODE_ERRORS as error:
        raise _decode_failure(path, error) from None


def check_headers(paths: Sequence[Path]) -> None:
    """:func:`check_header` on every file, in order: the first bad one raises.

    About 80 µs a file on this project's CPU from the page cache (ImageNet's 1.33 M files: about
    2 min); a thread pool was slower there.
    """
    for path in paths:
        check_header(path)


def decode_image(path: Path, size: int) -> np.ndarray:
    """One image file as RGB uint8 (3, size, size), resized (bilinear) if it is not size x size."""
    rgb = read_rgb(path)
    try:
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    except MemoryError as error:
        raise _decode_failure(path, error) from None
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def decode_images(paths: Sequence[Path], size: int) -> np.ndarray:
    """Decode ``paths`` with a thread pool into uint8 (N, 3, size, size)."""
    try:
        images = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    except MemoryError:
        gib = len(paths) * 3 * size * size / 2**30
        raise SakdError(
            f"{len(paths)} images of {size}x{size} need {gib:.0f} GiB of memory: choose a smaller "
            "data.image_size"
        ) from None
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for index, array in enumerate(pool.map(lambda p: decode_image(p, size), paths)):
            images[index] = array
    return images


def fingerprint(base: Path, paths: Sequence[Path], labels: Sequence[int], size: int) -> str:
    """Hash of the relative path, size, mtime and label of every file, and the decoded size."""
    digest = hashlib.sha256(f"size={size}\n".encode())
    for path, label in zip(paths, labels, strict=True):
        stat = path.stat()
        digest.update(
            f"{path.relative_to(base)}\t{stat.st_size}\t{stat.st_mtime_ns}\t{label}\n".encode()
        )
    return digest.hexdigest()[:16]


def _write_atomically(target: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write an npz through a temporary file in the same folder, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".part", dir=target.parent
    )
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, images=images, labels=labels)
        os.replace(temp_name, target)
    finally:
        Path(temp_name).unlink(missing_ok=True)


def load_decoded(
    base: Path, split: str, paths: Sequence[Path], labels: Sequence[int], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 3, size, size) and labels int64 (N,), from the cache under ``base`` or decoded."""
    key = fingerprint(base, paths, labels, size)
    cache_dir = base / CACHE_FOLDER
    cache_file = cache_dir / f"{split}-{size}px-{key}.npz"
    if cache_file.is_file():
        try:
            with np.load(cache_file) as cached:
                images, label_array = cached["images"], cached["labels"]
            if images.shape == (len(paths), 3, size, size) and np.array_equal(label_array, labels):
                return images, label_array
            warnings.warn(
                f"ignoring cache {cache_file} that does not match the files; decoding again",
                stacklevel=2,
            )
        except (OSError, ValueError, KeyError, EOFError):
            warnings.warn(
                f"ignoring unreadable cache {cache_file}; decoding the images again", stacklevel=2
            )
    images = decode_images(paths, size)
    label_array = np.asarray(labels, dtype=np.int64)
    try:
        _write_atomically(cache_file, images, label_array)
    except OSError as error:
        warnings.warn(
            f"could not cache decoded images in {cache_dir} ({error}); they will be decoded again next time",
            stacklevel=2,
        )
        return images, label_array
    for stale in cache_dir.glob(f"{split}-{size}px-*.npz"):
        if stale != cache_file:
            stale.unlink(missing_ok=True)
    return images, label_array


def interleave(groups: Sequence[Sequence[Path]]) -> tuple[list[Path], list[int]]:
    """Round-robin over per-class file lists: every prefix is as class-balanced as possible.

    Returns the files and their class indices (the position of their group).
    """
    paths, labels = [], []
    for rank in range(max((len(group) for group in groups), default=0)):
        for label, group in enumerate(groups):
            if rank < len(group):
                paths.append(group[rank])
                labels.append(label)
    return paths, labels


def list_images(folder: Path, extensions: frozenset[str]) -> list[Path]:
    """Image files (by extension, case-insensitive) directly in ``folder``, sorted by name.

    Other files (a README, hidden files) are skipped; an entry named like an image that is no
    file (a link to nothing, a folder ``x.jpg``) is one line, so no image is silently lost.
    """
    images = []
    for entry in folder.iterdir():
        if entry.name.startswith(".") or entry.suffix.lower() not in extensions:
            continue
        if not entry.is_file():
            what = "a link to nothing" if entry.is_symlink() and not entry.exists() else "no file"
            raise SakdError(
                f"{str(entry)!r} is named like an image but is {what}: fix or remove it (every "
                f"image of {str(folder)!r} is used)"
            )
        images.append(entry)
    return sorted(images)
