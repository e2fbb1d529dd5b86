"""Test-only fault injection: ``SAKD_FAULT`` makes the process kill itself at a named point.

The tests of "nothing is lost" (``tests/engine/test_resume_faults.py``) need a process to die at
exact places — mid-epoch, inside a checkpoint write, between ``best.pt`` and ``last.pt`` — so the
training code calls :func:`fault_point` at those places. Without ``SAKD_FAULT`` (every real run)
the call is one dictionary lookup and does nothing.

``SAKD_FAULT=NAME@N[:SIGNAL]`` sends ``SIGNAL`` (``KILL`` by default, or ``TERM``/``INT``) to this
process the ``N``-th time (1-based, counted per process) it reaches point ``NAME``. Points:

* ``step`` — after a training step's optimiser update;
* ``evaluate`` — before an evaluation of the test split;
* ``between_best_and_last`` — after ``best.pt`` was replaced, before ``last.pt`` is written;
* ``write:<file name>`` — inside an atomic write of that file (``last.pt``, ``best.pt``,
  ``summary.json``...), after the temporary file is written and synced, before it is renamed;
* ``finish`` — after training, before ``best.pt.sha256`` and ``summary.json`` are written.
"""

from __future__ import annotations

import os
import signal

ENV = "SAKD_FAULT"
_SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}
_counts: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Kill (or signal) this process here when ``SAKD_FAULT`` names this point and count."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, rest = spec.partition("@")
    if target != name:
        return
    count, _, sig = rest.partition(":")
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == int(count or 1):
        os.kill(os.getpid(), _SIGNALS[sig or "KILL"])


def reset() -> None:
    """Forget the per-process counts (for a test that forks several runs from one process)."""
    _counts.clear()
