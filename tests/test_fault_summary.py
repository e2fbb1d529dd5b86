"""The fault table of docs/runs.md is generated from the ``fault`` markers and kept up to date."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "fault_summary.py"


def _python(*args: str, cwd: Path = ROOT, path: Path = ROOT / "src") -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_fault_table_of_docs_runs_md_is_up_to_date_and_a_stale_one_is_found(tmp_path):
    result = _python(str(SCRIPT), "--check")
    assert result.returncode == 0, result.stderr[-2000:]
    doc = (ROOT / "docs" / "runs.md").read_text(encoding="utf-8")
    stale = tmp_path / "runs.md"
    row = next(line for line in doc.splitlines() if line.startswith("| **interrupted**"))
    stale.write_text(doc.replace(row, row.replace("| **interrupted**", "| **interrupted** ")))
    result = _python(str(SCRIPT), "--check", "--doc", str(stale))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "is out of date" in result.stderr, result.stderr
    assert "python scripts/fault_summary.py" in result.stderr


def test_a_fault_marker_naming_no_listed_class_stops_the_collection(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n\n"
        "@pytest.mark.fault('interrupted')\ndef test_known():\n    pass\n\n\n"
        "@pytest.mark.fault('cosmic-rays')\ndef test_unknown():\n    pass\n\n\n"
        "@pytest.mark.fault\ndef test_no_name():\n    pass\n"
    )
    argv = [
        "-m",
        "pytest",
        "--collect-only",
        "-q",
        "-p",
        "fault_classes",
        "-p",
        "no:cacheprovider",
        "--noconftest",
    ]
    result = _python(*argv, "-c", os.devnull, str(tmp_path), cwd=tmp_path, path=ROOT / "tests")
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 error" in result.stdout and "ERROR collecting" in result.stdout
    assert "test_x.py::test_unknown: fault('cosmic-rays') names no fault class" in result.stdout
    assert "test_x.py::test_no_name: fault() names no fault class" in result.stdout
    assert "test_known: " not in result.stdout
    assert "use one of interrupted, run-folder," in result.stdout
