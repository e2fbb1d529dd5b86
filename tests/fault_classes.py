"""The classes of fault a test may claim with ``@pytest.mark.fault(name)``: the one list.

``scripts/fault_summary.py`` counts the collected tests of each class and writes the table of
``docs/runs.md``; ``tests/conftest.py`` registers this module as a plugin, so a test that names a
class not listed here (or gives the marker no single name) fails to collect: a collection error.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest


class FaultClass(NamedTuple):
    title: str
    handling: str


FAULT_CLASSES: dict[str, FaultClass] = {
    "interrupted": FaultClass(
        "interrupted runs (SIGKILL, SIGTERM, Ctrl-C at any point)",
        "Atomic writes and complete RNG/schedule states in `last.pt`: the same command resumes "
        "and ends bitwise equal to an uninterrupted run; SIGTERM exits 143 and Ctrl-C 130.",
    ),
    "run-folder": FaultClass(
        "damaged or foreign run-folder files",
        "A damaged `config.yaml`, metrics file or checkpoint, a checkpoint of another run or past "
        "its end, a link, a non-regular file or a held lock is refused in one line naming the file "
        "and the fix; nothing is written through a link; a lost `best.pt` is rebuilt from "
        "`last.pt` when that is the best epoch.",
    ),
    "divergence": FaultClass(
        "divergence (non-finite losses, weights or numbers)",
        "Training stops in one line before diverged weights (not finite, or a trained parameter "
        "past 1e4) are saved; a resume may then lower `lr` or change `precision` (recorded under "
        "`config_changes`), a checkpoint with diverged weights is not resumed, export warns.",
    ),
    "os-error": FaultClass(
        "OS errors (read-only folder, full disk, a file in the way)",
        "One line naming the file and the cause; the previous `last.pt` is unchanged.",
    ),
    "stored-code": FaultClass(
        "code the user did not name (stored `module:` names, pickle payloads)",
        "Checkpoints load weights only; a factory named in a stored config is imported only "
        "when confirmed with `--trust-code`; pickled code is refused in one line.",
    ),
    "user-code": FaultClass(
        "user code that fails (factory modules, own models and datasets)",
        "An exception of a factory module is one line naming it; a dataset's own exception keeps "
        "its type with the sample index; a model that cannot be cut is refused naming the module.",
    ),
    "data": FaultClass(
        "data faults (corrupt, foreign or degenerate files and folders)",
        "Found before the run folder is made (or at the first batch, which then leaves nothing): "
        "one line naming the file, also from a loader worker.",
    ),
    "config": FaultClass(
        "bad configs and command lines",
        "Refused before anything is written, in one bounded line naming the key or argument and "
        "its fix (unknown or renamed keys, malformed or bomb YAML, bad values, usage errors).",
    ),
    "api": FaultClass(
        "mistakes in Python API calls",
        "`sakd.errors.SakdError` with the same one-line message as the CLI, raised before "
        "anything is written.",
    ),
    "teacher": FaultClass(
        "teacher files (wrong layout, keys, shapes or checksum)",
        "Refused in one line naming the nearest known layout, the architecture that differs or "
        "the checksum that does not match.",
    ),
    "data-parallel": FaultClass(
        "data-parallel faults (a hung or dead rank)",
        "Every collective operation fails after `SAKD_COLLECTIVE_TIMEOUT_S` with one line naming "
        "the rank that waited, instead of blocking forever.",
    ),
}


def fault_errors(items) -> list[str]:
    """One line for every ``fault`` marker that does not name exactly one listed class."""
    errors = []
    for item in items:
        for marker in item.iter_markers("fault"):
            if marker.kwargs or len(marker.args) != 1 or marker.args[0] not in FAULT_CLASSES:
                args = ", ".join(
                    [*map(repr, marker.args), *(f"{k}={v!r}" for k, v in marker.kwargs.items())]
                )
                errors.append(
                    f"{item.nodeid}: fault({args}) names no fault class; "
                    f"use one of {', '.join(FAULT_CLASSES)} (tests/fault_classes.py)"
                )
    return errors


def fault_class(item) -> str | None:
    """The class a collected test claims (its closest ``fault`` marker), or None."""
    marker = item.get_closest_marker("fault")
    return None if marker is None else marker.args[0]


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """A module or class holding a test whose marker names no class fails to collect (also under
    pytest-xdist, whose workers report collection errors to the controller)."""
    report = yield
    if report.passed:
        errors = fault_errors(x for x in report.result if isinstance(x, pytest.Item))
        if errors:
            report.outcome, report.longrepr, report.result = "failed", "\n".join(errors), []
    return report
