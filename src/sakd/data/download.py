"""Download an archive with a checksum, atomically, and extract it without leaving its folder.

Security rules: the checksum is verified before anything parses the archive; a download that fails
or does not match leaves nothing on disk; extraction uses tarfile's ``"data"`` filter (no absolute
paths, no ``..``, no links or devices pointing outside) into a temporary folder that is renamed into
place only when the whole archive extracted cleanly.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from sakd.errors import SakdError

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class ArchiveSource:
    """Where an official archive lives, its md5, its file name and the folder it unpacks to."""

    url: str
    md5: str
    filename: str
    folder: str


def file_md5(path: Path) -> str:
    """Hex md5 digest of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_verified(url: str, destination: Path, md5: str, timeout_s: float = 60.0) -> None:
    """Fetch ``url`` to ``destination`` through a temporary file; keep it only if its md5 matches."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".part", dir=destination.parent
    )
    temp_path = Path(temp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(url, timeout=timeout_s) as response,
        ):
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=destination.name, disable=None
            ) as bar:
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise SakdError(
                f"download of {url} has md5 {digest.hexdigest()}, expected {md5}: the file was discarded; "
                "retry, or download it yourself and check it before placing it in the data root"
            )
        os.replace(temp_path, destination)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise SakdError(
            f"could not download {url} ({error}): check the network, or download it by hand to {destination}"
        ) from error
    finally:
        temp_path.unlink(missing_ok=True)


def verify_md5(path: Path, md5: str) -> None:
    """Raise :class:`SakdError` unless the file at ``path`` has md5 ``md5``."""
    actual = file_md5(path)
    if actual != md5:
        raise SakdError(
            f"{path} has md5 {actual}, expected {md5}: it is corrupt or not the official archive; "
            "delete it and download again"
        )


def extract_tar_safely(archive: Path, parent: Path, folder: str) -> Path:
    """Extract the tar ``archive`` whose top folder is ``folder`` into ``parent``; return the folder."""
    if not hasattr(tarfile, "data_filter"):
        raise SakdError(
            f"this Python lacks tarfile's safe 'data' filter (3.10.12+, 3.11.4+, 3.12+): "
            f"upgrade Python, or extract {archive} by hand into {parent}"
        )
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=parent))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(staging, filter="data")
        except tarfile.FilterError as error:
            raise SakdError(
                f"{archive} holds an unsafe member ({error}); nothing was extracted: delete the archive"
            ) from error
        except (tarfile.TarError, EOFError, OSError) as error:
            raise SakdError(
                f"{archive} could not be extracted ({error}): delete it and download again"
            ) from error
        extracted = staging / folder
        if not extracted.is_dir():
            raise SakdError(
                f"{archive} has no top folder {folder!r}: it is not the expected archive; delete it"
            )
        target = parent / folder
        os.replace(extracted, target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch_and_extract(source: ArchiveSource, root: Path, download: bool) -> Path:
    """Make ``root/source.folder`` exist: extract a verified local archive, or download one first."""
    archive = root / source.filename
    if archive.is_file():
        verify_md5(archive, source.md5)
    elif download:
        download_verified(source.url, archive, source.md5)
    else:
        raise SakdError(
            f"{root / source.folder} not found: put the official {source.filename} (or its extracted "
            f"folder) in {root}, or enable downloading (download=True)"
        )
    return extract_tar_safely(archive, root, source.folder)
