"""CIFAR readers on generated official-format files, the real download path, and its safety."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import pytest
import torch

from sakd.data import cifar as cifar_module
from sakd.data import load_dataset
from sakd.data.download import ArchiveSource
from sakd.errors import SakdError


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def point_source_at(monkeypatch, name: str, url: str, md5: str) -> None:
    """Replace the official URL/md5 of ``name`` by a local one; everything else is the real code path."""
    official = cifar_module.CIFAR_SOURCES[name]
    monkeypatch.setitem(
        cifar_module.CIFAR_SOURCES,
        name,
        ArchiveSource(url, md5, official.filename, official.folder),
    )


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_cifar10_train_and_test_load_right(tmp_path, formats):
    formats.write_cifar10(tmp_path, per_batch=4, test_size=3)
    train = load_dataset("cifar10", str(tmp_path), train=True)
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [k % 10 for k in range(20)]
    assert train.class_names == formats.cifar10_names and train.num_classes == 10
    expected = torch.from_numpy(formats.cifar_pixels(0, 20)).view(20, 3, 32, 32)
    assert torch.equal(train.images, expected)
    assert train.images[1, 2, 3, 4].item() == (2 * 1024 + 3 * 32 + 4 + 1) % 256
    assert train.augment.crop_padding == 4 and train.augment.horizontal_flip
    test = load_dataset("cifar10", str(tmp_path / "cifar-10-batches-py"), train=False)
    assert test.images.shape == (3, 3, 32, 32) and test.labels.tolist() == [9, 8, 7]


def test_cifar100_uses_fine_labels_and_names(tmp_path, formats):
    formats.write_cifar100(tmp_path, train_size=6, test_size=2)
    train = load_dataset("cifar100", str(tmp_path), train=True)
    assert train.images.shape == (6, 3, 32, 32) and train.num_classes == 100
    assert train.labels.tolist() == [(17 * k) % 100 for k in range(6)]
    assert train.class_names[:2] == ["fine0", "fine1"] and len(train.class_names) == 100
    assert train.mean == (0.5071, 0.4867, 0.4408) and train.std == (0.2675, 0.2565, 0.2761)
    test = load_dataset("cifar100", str(tmp_path), train=False)
    assert test.labels.tolist() == [0, 17] and torch.equal(
        test.images, torch.from_numpy(formats.cifar_pixels(500, 2)).view(2, 3, 32, 32)
    )


def test_download_through_http_extracts_and_loads(tmp_path, formats, http_server, monkeypatch):
    base_url, served = http_server
    archive = formats.make_tar_gz(formats.write_cifar10(tmp_path / "build"), served / "c10.tar.gz")
    point_source_at(monkeypatch, "cifar10", f"{base_url}/c10.tar.gz", md5_of(archive))
    root = tmp_path / "data"
    data = load_dataset("cifar10", str(root), train=True, download=True)
    assert data.images.shape == (20, 3, 32, 32) and data.class_names == formats.cifar10_names
    assert listing(root)[:2] == ["cifar-10-batches-py", "cifar-10-batches-py/batches.meta"]
    assert (root / "cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()
    assert not [p for p in listing(root) if p.startswith(".") or p.endswith(".part")]
    again = load_dataset("cifar10", str(root), train=False, download=True)
    assert again.images.shape == (3, 3, 32, 32)


def test_local_archive_is_verified_and_extracted_without_download(tmp_path, formats, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    archive = formats.make_tar_gz(
        formats.write_cifar100(tmp_path / "build"), root / "cifar-100-python.tar.gz"
    )
    point_source_at(monkeypatch, "cifar100", "http://127.0.0.1:9/unreachable", md5_of(archive))
    assert load_dataset("cifar100", str(root), train=False).images.shape == (2, 3, 32, 32)


@pytest.mark.fault("data")
def test_checksum_mismatch_leaves_nothing_and_never_opens_the_archive(
    tmp_path, formats, http_server, monkeypatch
):
    base_url, served = http_server
    formats.make_tar_gz(formats.write_cifar10(tmp_path / "build"), served / "c10.tar.gz")
    point_source_at(monkeypatch, "cifar10", f"{base_url}/c10.tar.gz", "0" * 32)

    def refuse(*args, **kwargs):
        raise AssertionError("the archive was opened before its checksum was verified")

    monkeypatch.setattr(tarfile, "open", refuse)
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(SakdError, match="md5"):
        load_dataset("cifar10", str(root), train=True, download=True)
    assert listing(root) == []


@pytest.mark.fault("data")
def test_local_archive_with_wrong_checksum_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(b"not the official archive")
    monkeypatch.setattr(
        tarfile, "open", lambda *a, **k: pytest.fail("opened an unverified archive")
    )
    with pytest.raises(SakdError, match="expected c58f30108f718f92721af3b95e74349a"):
        load_dataset("cifar10", str(root), train=True)
    assert listing(root) == ["cifar-10-python.tar.gz"]


@pytest.mark.fault("data")
def test_http_error_leaves_nothing(tmp_path, http_server, monkeypatch):
    base_url, _ = http_server
    point_source_at(monkeypatch, "cifar10", f"{base_url}/missing.tar.gz", "0" * 32)
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(SakdError, match="could not download"):
        load_dataset("cifar10", str(root), train=True, download=True)
    assert listing(root) == []


def malicious_archive(path: Path, kind: str) -> Path:
    """A tar.gz with a valid CIFAR top folder plus one member escaping the extraction folder."""
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo("cifar-10-batches-py")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        if kind == "dotdot":
            payload = b"owned"
            member = tarfile.TarInfo("../evil")
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
        else:
            link = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
            link.type = tarfile.SYMTYPE
            link.linkname = "../../outside" if kind == "relative-link" else "/etc/passwd"
            tar.addfile(link)
    return path


@pytest.mark.fault("data")
@pytest.mark.parametrize("kind", ["dotdot", "relative-link", "absolute-link"])
def test_malicious_archive_is_refused(tmp_path, http_server, monkeypatch, kind):
    base_url, served = http_server
    archive = malicious_archive(served / "evil.tar.gz", kind)
    point_source_at(monkeypatch, "cifar10", f"{base_url}/evil.tar.gz", md5_of(archive))
    root = tmp_path / "deep" / "data"
    with pytest.raises(SakdError, match="unsafe member"):
        load_dataset("cifar10", str(root), train=True, download=True)
    assert listing(root) == ["cifar-10-python.tar.gz"]
    assert not (tmp_path / "deep" / "evil").exists() and not (tmp_path / "evil").exists()


@pytest.mark.fault("stored-code")
def test_pickle_with_foreign_globals_is_refused(tmp_path, formats):
    folder = formats.write_cifar10(tmp_path)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": Exploit()}, protocol=2))
    with pytest.raises(SakdError, match="not a valid CIFAR pickle"):
        load_dataset("cifar10", str(tmp_path), train=True)
    assert not marker.exists()


@pytest.mark.fault("data")
def test_missing_data_and_incomplete_folder_raise_sakd_error(tmp_path, formats):
    with pytest.raises(SakdError, match="download=True"):
        load_dataset("cifar10", str(tmp_path / "nowhere"), train=True)
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(SakdError, match="needs a data root"):
        load_dataset("cifar100", None, train=True)
    folder = formats.write_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(SakdError, match="data_batch_3 is missing"):
        load_dataset("cifar10", str(tmp_path), train=True)
    with pytest.raises(SakdError, match="32x32"):
        load_dataset("cifar10", str(tmp_path), train=True, image_size=64)


@pytest.mark.fault("data")
def test_cifar100_files_under_the_cifar10_name_are_rejected(tmp_path, formats):
    folder = formats.write_cifar100(tmp_path)
    (folder / "batches.meta").write_bytes(
        pickle.dumps({"label_names": [str(i) for i in range(10)]}, protocol=2)
    )
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"):
        (folder / name).write_bytes((folder / "train").read_bytes())
    with pytest.raises(SakdError, match="lacks 'data' or 'labels'"):
        load_dataset("cifar10", str(folder), train=True)
