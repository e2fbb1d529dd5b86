"""The engine: a validated :class:`~sakd.config.RunConfig` in; a trained run folder out.

Its public surface, what the API, the CLI and the experiments use:

* :func:`sakd.engine.run.run` trains or distils the run a config describes and returns its
  :class:`RunSummary` (a :class:`CompleteRunSummary` when the folder already holds it); the
  function keeps its module's name, so it is imported from :mod:`sakd.engine.run`;
* :func:`build_task` and :func:`load_data` (:mod:`sakd.engine.build`): the builders that turn the
  config into a task and its data, failing before anything is written;
* the task contract (:mod:`sakd.engine.task_contract`): :class:`Task`, :class:`Phase`,
  :class:`ParamGroup`, :class:`StepResult` — what the :class:`Trainer` (:mod:`sakd.engine.trainer`)
  steps, knowing no distiller;
* the two tasks sakd trains (:mod:`sakd.engine.training_tasks`): :class:`ClassificationTask` and
  :class:`DistillationTask` (with its :class:`LossTerm`);
* :class:`Runtime` (:mod:`sakd.engine.runtime`): device, precision, memory format, ranks.

The run folder's files are read and written by :mod:`sakd.engine.rundir`,
:mod:`sakd.engine.checkpoint`, :mod:`sakd.engine.records` and :mod:`sakd.engine.metrics`; the
other modules are the engine's own. The names are imported on first use, so importing one engine
module does not import them all.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "RunSummary": "sakd.engine.trainer",
    "CompleteRunSummary": "sakd.engine.run",
    "build_task": "sakd.engine.build",
    "load_data": "sakd.engine.build",
    "Task": "sakd.engine.task_contract",
    "Phase": "sakd.engine.task_contract",
    "ParamGroup": "sakd.engine.task_contract",
    "StepResult": "sakd.engine.task_contract",
    "Trainer": "sakd.engine.trainer",
    "ClassificationTask": "sakd.engine.training_tasks",
    "DistillationTask": "sakd.engine.training_tasks",
    "LossTerm": "sakd.engine.training_tasks",
    "Runtime": "sakd.engine.runtime",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'sakd.engine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
