"""The README's "Your own model and data" routes, run as written (with tiny overrides).

The fenced blocks are extracted from README.md: the module file, the Python route, the two YAML
files and the shell commands. The only changes: ``/path/to/images`` points at a generated tree,
``epochs=30`` becomes one epoch, and the commands get ``epochs=1 progress=false``.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import torch

from sakd.cli import main

from .conftest import write_tree

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = ("### Your own model and data", "## Documentation")


def _blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    start, end = text.index(SECTION[0]), text.index(SECTION[1])
    return re.findall(r"```(\w+)\n(.*?)```", text[start:end], flags=re.S)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A user's folder: the README's module file in it, images, the current directory."""
    blocks = _blocks()
    module = next(code for lang, code in blocks if code.startswith("# my_package/my_module.py"))
    (tmp_path / "my_package").mkdir()
    (tmp_path / "my_package" / "my_module.py").write_text(module)
    images = write_tree(tmp_path / "images", per_class=(3, 2), classes=10)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield tmp_path, images, blocks
    for name in [m for m in sys.modules if m.split(".")[0] == "my_package"]:
        del sys.modules[name]


def _tiny(code: str, images: Path) -> str:
    return code.replace("/path/to/images", str(images)).replace("epochs=30", "epochs=1")


def test_readme_python_route(project, capsys, monkeypatch):
    root, images, blocks = project
    scripts = [c for lang, c in blocks if lang == "python" and c.startswith("import sakd")]
    assert len(scripts) == 1
    monkeypatch.syspath_prepend(str(root))  # a script's folder is on its path
    namespace: dict = {}
    exec(compile(_tiny(scripts[0], images), "README.md", "exec"), namespace)
    run, student = namespace["run"], namespace["student"]
    assert run.model is student and run.output_dir == Path("runs/my_student")
    nets = sys.modules["my_package.my_module"]
    fresh = nets.MyNet(num_classes=10, width=8)
    fresh.load_state_dict(torch.load(root / "my_student.pt", weights_only=True), strict=True)
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.endswith("runs/my_student")


def test_readme_yaml_route(project, capsys):
    root, images, blocks = project
    for lang, code in blocks:
        if lang == "yaml":
            name = code.splitlines()[0].removeprefix("# ").strip()
            (root / name).write_text(_tiny(code, images))
    commands = [c for lang, c in blocks if lang == "bash"]
    assert len(commands) == 1
    lines = [line.split("#")[0].strip() for line in commands[0].splitlines()]
    for line in filter(None, lines):
        argv = shlex.split(line)
        assert argv[0] == "sakd"
        extra = ["epochs=1", "progress=false"] if argv[1] in ("train", "distill") else []
        assert main([*argv[1:], *extra]) == 0, line
    nets = sys.modules["my_package.my_module"]
    student = nets.build_small(num_classes=10)
    student.load_state_dict(torch.load(root / "my_student.pt", weights_only=True), strict=True)
    teacher = nets.build_model(num_classes=10)
    teacher.load_state_dict(torch.load(root / "my_model.pt", weights_only=True), strict=True)
    config = (root / "runs" / "my_distill" / "config.yaml").read_text()
    assert "build_small" in config and "stages:\n  - layer1" in config
