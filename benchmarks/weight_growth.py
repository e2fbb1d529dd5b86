"""How large the weights grow at each learning rate: the measurement behind ``weight_limit``.

    python benchmarks/weight_growth.py                 # lr 1, 10, 100 for 4 epochs
    python benchmarks/weight_growth.py --lrs 1 100 --epochs 3

Trains the quick-start student (resnet8) on the embedded data (96 train / 64 test images, batch
32, fp32, CPU) once per learning rate with ``weight_limit=null`` (nothing stops it but a
non-finite number) and prints, after every epoch, the largest magnitude of a trained parameter
and of a buffer (BatchNorm's running statistics), the epoch's training CE and the test top-1.
``docs/runs.md`` ("Divergence") quotes its output.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from sakd.config import load_config
from sakd.engine import trainer as trainer_module
from sakd.engine.divergence import trained_names
from sakd.engine.run import run
from sakd.errors import SakdError


def _peaks(trainer: trainer_module.Trainer) -> tuple[float, float]:
    """(largest |trained parameter|, largest |buffer|) of the student, NaN/inf as they are."""
    student = trainer.task.checkpoint_modules()["student"]
    trained = trained_names(student)
    weights, buffers = [0.0], [0.0]
    for name, tensor in student.state_dict().items():
        if tensor.is_floating_point() and tensor.numel():
            (weights if name in trained else buffers).append(tensor.abs().max().item())
    return max(weights), max(buffers)


def measure(lr: float, epochs: int, out: Path) -> None:
    original = trainer_module.Trainer._train_epoch

    def train_epoch(self, phase, index, epoch, optimizers):
        record = original(self, phase, index, epoch, optimizers)
        weight, buffer = _peaks(self)
        print(
            f"lr {lr:g} epoch {epoch + 1}: max |trained weight| {weight:.3g}, max |buffer| "
            f"{buffer:.3g}, ce {record.losses.get('ce', float('nan')):.3g}",
            flush=True,
        )
        return record

    trainer_module.Trainer._train_epoch = train_epoch
    overrides = [
        f"output_dir={out}",
        f"epochs={epochs}",
        "batch_size=32",
        "data.train_limit=96",
        "data.test_limit=64",
        "progress=false",
        "precision=fp32",
        "device=cpu",
        f"lr={lr}",
        "weight_limit=null",
    ]
    try:
        summary = run(load_config("quickstart/student", overrides))
        print(f"lr {lr:g}: finished, best top-1 {summary.best_top1:.2f}", flush=True)
    except SakdError as error:
        print(f"lr {lr:g}: stopped: {str(error).split(';')[0]}", flush=True)
    finally:
        trainer_module.Trainer._train_epoch = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        for lr in args.lrs:
            measure(lr, args.epochs, Path(root) / f"lr{lr:g}")


if __name__ == "__main__":
    main()
