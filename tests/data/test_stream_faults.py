"""Damaged streamed data: one line, found before the run folder is written, or nothing left behind."""

from __future__ import annotations

import pytest

from sakd.config import load_config
from sakd.data import open_stream
from sakd.data.streaming import FileReader
from sakd.engine.run import run
from sakd.errors import SakdError

from .test_loader_faults import _png_header_only
from .test_stream_runs import stream_overrides

pytestmark = [pytest.mark.xdist_group("stream-runs"), pytest.mark.fault("data")]


@pytest.fixture
def tree(tmp_path, formats):
    return formats.write_image_tree(tmp_path / "tree", classes=3, train=4, val=2)


def _fails_and_leaves_nothing(out, tree, match: str) -> None:
    with pytest.raises(SakdError, match=match) as info:
        run(load_config("quickstart/student", stream_overrides(out, tree, "epochs=1")))
    assert "\n" not in str(info.value)
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


def test_a_decompression_bomb_is_one_line_when_streamed(tmp_path, tree):
    bomb = tree / "train" / "class1" / "bomb.png"
    _png_header_only(bomb, 100_000, 100_000)
    with pytest.raises(SakdError, match="too large to decode safely"):
        open_stream("folder", str(tree), train=True)
    # The reader itself (a file replaced after the split was opened) says the same.
    with pytest.raises(SakdError, match="too large to decode safely") as info:
        FileReader((bomb,))(0)
    assert "\n" not in str(info.value)


def test_a_file_that_is_no_image_is_found_before_the_run_folder_is_made(tmp_path, tree):
    (tree / "val" / "class2" / "notes.jpg").write_bytes(b"this is not a JPEG\n" * 4)
    _fails_and_leaves_nothing(tmp_path / "out", tree, r"cannot decode image .*notes\.jpg")


def test_a_truncated_image_fails_the_first_batch_and_leaves_no_run_folder(tmp_path, tree):
    # A valid header (it passes the check at open) whose pixel data is cut off.
    image = tree / "train" / "class0" / "1.png"
    image.write_bytes(image.read_bytes()[:80])
    _fails_and_leaves_nothing(tmp_path / "out", tree, r"cannot decode image .*1\.png")


def test_a_folder_the_user_made_keeps_only_what_was_there(tmp_path, tree):
    image = tree / "train" / "class0" / "1.png"
    image.write_bytes(image.read_bytes()[:80])
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SakdError, match="cannot decode image"):
        run(load_config("quickstart/student", stream_overrides(out, tree, "epochs=1")))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    ("split", "needle"),
    [("train", r"class3 holds no \.png"), ("val", r"class3 has no counterpart in the train split")],
)
def test_an_empty_class_folder_is_found_before_the_run_folder_is_made(
    tmp_path, tree, split, needle
):
    (tree / split / "class3").mkdir()
    _fails_and_leaves_nothing(tmp_path / "out", tree, needle)
