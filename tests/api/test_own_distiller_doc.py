"""docs/distillers.md "Write your own distiller": its code, run exactly as the page writes it.

The page's class is saved as ``my_distillers.py``, its command line runs a one-epoch distillation
from the current directory, and its Python snippet runs on the user's own nets.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

import sakd
from sakd.cli import main
from sakd.losses import registry

from ..conftest import tiny_overrides
from .conftest import OwnNet, TensorPairs

DOC = Path(__file__).resolve().parents[2] / "docs" / "distillers.md"


def _blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block of the page's "Write your own distiller" section."""
    text = DOC.read_text()
    section = text[text.index("## Write your own distiller") :]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


@pytest.fixture
def own_module(tmp_path, monkeypatch):
    """The page's distiller saved as my_distillers.py in a fresh current directory."""
    (language, code), *_ = _blocks()
    assert language == "python"
    (tmp_path / "my_distillers.py").write_text(code)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(registry, "_DISTILLERS", dict(registry._DISTILLERS))
    yield tmp_path
    sys.modules.pop("my_distillers", None)


def test_the_command_line_of_the_page_distils_with_the_own_distiller(own_module, capsys):
    command = next(code for language, code in _blocks() if language == "bash")
    program, *args = shlex.split(command)
    assert program == "sakd"
    out = own_module / "run"
    assert main([*args, *tiny_overrides(out, "epochs=1")]) == 0
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["losses"]["cosine_logits"] > 0
    assert set(record["spot_rates"]) == {"logits"}
    weights = json.loads((out / "run.json").read_text())["resolved_weights"]
    assert weights["distiller.params.margin"] == {"value": 0.0, "source": "default"}
    assert weights["distiller.loss_weight"]["value"] == 2.0
    assert weights["distiller.loss_weight"]["source"] == "published:sakd"
    assert registry.get_distiller("cosine_logits").__module__ == "my_distillers"


def test_the_python_snippet_of_the_page_distils_the_users_nets(own_module, tree, monkeypatch):
    snippet = [code for language, code in _blocks() if language == "python"][1]
    calls = []
    distill = sakd.distill

    def one_epoch(*args, **kwargs):
        kwargs.update(epochs=1, batch_size=8, progress=False, output_dir=str(own_module / "api"))
        calls.append(distill(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(sakd, "distill", one_epoch)
    monkeypatch.syspath_prepend(str(own_module))  # a script run beside my_distillers.py
    names = {
        "teacher": OwnNet(width=12),
        "student": OwnNet(width=6),
        "train_data": TensorPairs(tree / "train"),
        "val_data": TensorPairs(tree / "val"),
    }
    exec(compile(snippet, str(DOC), "exec"), names)
    (run,) = calls
    assert names["run"] is run and run.model is names["student"]
    record = json.loads((own_module / "api" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "cosine_logits" in record["losses"]
    assert run.config.distiller.params == {"margin": 0.1}
