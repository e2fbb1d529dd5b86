"""docs/tutorial-own-model.md, section 2 ("In Python"), run as written (with tiny overrides).

As for the README (``test_readme_own_model.py``): the tutorial's module file and its Python route
are extracted from the page; ``/path/to/images`` points at a generated tree and ``epochs=30``
becomes one epoch.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .conftest import write_tree
from .test_readme_own_model import _tiny

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial-own-model.md"


def test_tutorial_python_route(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", TUTORIAL.read_text(), flags=re.S)
    module = next(code for code in blocks if code.startswith("# my_package/my_module.py"))
    script = next(code for code in blocks if code.startswith("import sakd"))
    (tmp_path / "my_package").mkdir()
    (tmp_path / "my_package" / "my_module.py").write_text(module)
    images = write_tree(tmp_path / "images", per_class=(3, 2), classes=10)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        namespace: dict = {}
        exec(compile(_tiny(script, images), str(TUTORIAL), "exec"), namespace)
        run, student, teacher_run = namespace["run"], namespace["student"], namespace["teacher_run"]
        assert run.model is student and teacher_run.model is namespace["teacher"]
        assert run.output_dir == Path("runs/my_student")
        assert (tmp_path / "runs/my_student/checkpoints/last.pt").is_file()
        out = capsys.readouterr().out
        assert "teacher" in out and "student" in out
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == "my_package"]:
            del sys.modules[name]
