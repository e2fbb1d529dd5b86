"""Started by the tests through ``torchrun``: run ``sakd`` commands as a data-parallel job.

``python -m torch.distributed.run --nproc_per_node=2 ddp_worker.py SPEC.json`` runs, on every
rank, each entry of the spec — ``{"command": "distill" | "train", "config": YAML_PATH,
"stop_after_epochs": int | null, "expected_status": int (optional)}`` — through ``sakd.cli.main`` (what ``-m sakd`` runs), and after
every checkpoint writes this rank's module states to ``<output_dir>/rank<r>.pt``, so the test can
compare the ranks. ``stop_after_epochs`` interrupts the run after that many saved epochs (as a
Ctrl-C would), leaving a checkpoint to resume from. The worker exits with 0 when every command
ended with its expected status (0, 130 when interrupted, or the entry's ``expected_status``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

from sakd.cli import main
from sakd.collectives import rank_and_world_size
from sakd.engine import trainer as trainer_module
from sakd.models import StagedNet, create_model, list_models, register_model

NO_BATCHNORM_MODEL = "resnet8_nobn"


def resnet8_without_batchnorm(num_classes: int = 100) -> StagedNet:
    """resnet8 with every BatchNorm replaced by the identity: its output is per-sample."""
    net = create_model("resnet8", num_classes=num_classes)
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, name, nn.Identity())
    return net


def register_test_models() -> None:
    """Make ``resnet8_nobn`` available to configs (once per process)."""
    if NO_BATCHNORM_MODEL not in list_models():
        register_model(NO_BATCHNORM_MODEL)(resnet8_without_batchnorm)


def module_states(trainer: trainer_module.Trainer) -> dict[str, dict[str, torch.Tensor]]:
    """Copies of the tensors of every checkpointed module of the trainer's task (and its EMA)."""
    modules = dict(trainer.task.checkpoint_modules())
    if trainer.ema is not None:
        modules["ema"] = trainer.ema
    return {
        name: {
            key: value.detach().cpu().clone()
            for key, value in module.state_dict().items()
            if isinstance(value, torch.Tensor)
        }
        for name, module in modules.items()
    }


def patch_save(stop_after_epochs: int | None) -> None:
    """After every checkpoint dump this rank's states; interrupt after ``stop_after_epochs`` saves."""
    original = trainer_module.Trainer._save
    saves = {"count": 0}

    def save(self, *args, **kwargs):
        original(self, *args, **kwargs)
        rank = rank_and_world_size()[0]
        torch.save(module_states(self), self.run_dir / f"rank{rank}.pt")
        saves["count"] += 1
        if stop_after_epochs is not None and saves["count"] == stop_after_epochs:
            raise KeyboardInterrupt

    trainer_module.Trainer._save = save


def run_spec(spec_path: Path) -> int:
    """Run every entry of the spec; returns the first non-zero exit status (or 0)."""
    register_test_models()
    original_save = trainer_module.Trainer._save
    status = 0
    for entry in json.loads(spec_path.read_text()):
        patch_save(entry.get("stop_after_epochs"))
        code = main([entry["command"], entry["config"]])
        trainer_module.Trainer._save = original_save
        expected = entry.get("expected_status", 130 if entry.get("stop_after_epochs") else 0)
        if code != expected and status == 0:
            status = code or 1
    return status


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(run_spec(Path(sys.argv[1])))
