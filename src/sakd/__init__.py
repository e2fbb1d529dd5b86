"""sakd: spot-adaptive knowledge distillation for PyTorch.

The Python API (``docs/api.md``)::

    import sakd
    teacher_run = sakd.train(my_teacher, train_data, val_data, epochs=30, output_dir="runs/t")
    run = sakd.distill(my_teacher, my_student, train_data, val_data,
                       distiller="at", mode="adaptive", epochs=30, output_dir="runs/s")
    run.model, run.best_top1, run.last_top1, run.output_dir

``train``, ``distill`` and ``Run`` are imported on first use (:mod:`sakd.api`), so ``import sakd``
and the CLI stay fast.
"""

from sakd._version import __version__

_API = ("Run", "distill", "train")
__all__ = ["Run", "__version__", "distill", "train"]


def __getattr__(name: str):
    if name in _API:
        from sakd import api

        return getattr(api, name)
    raise AttributeError(f"module 'sakd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
