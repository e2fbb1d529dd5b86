"""The distillation task's loss terms: the same numbers as before vanilla KD became an ordinary term.

Golden values were computed with the code before the refactor (when vanilla KD was special-cased in
the builder and the task) on fixed inputs: the quick-start pair, seed 0, the first 8 training
images, fp32 on the CPU. They must not move: a change here changes every published run.
"""

from __future__ import annotations

import pytest
import torch

from sakd.config import load_config
from sakd.engine.build import build_task, load_data
from sakd.engine.runtime import Runtime, seed_everything

GOLDEN = {
    ("distiller.name=kd",): {"ce": 0.23188543319702148, "kd": 13.004656791687012},
    ("distiller.name=at",): {
        "ce": 2.318854331970215,
        "kd": 14.44961929321289,
        "at": 15.773266792297363,
    },
    ("distiller.name=at", "spots.mode=adaptive", "spots.homogeneous=false"): {
        "ce": 2.318854331970215,
        "kd": 1.1657218933105469,
        "at": 7.375560760498047,
        "routing": 9.357645034790039,
    },
}


def first_step_losses(*overrides: str) -> dict[str, float]:
    """Named losses of the first distillation step of the quick-start pair on 8 fixed images."""
    cfg = load_config(
        "quickstart",
        [
            "output_dir=unused",
            "data.train_limit=16",
            "data.test_limit=8",
            "precision=fp32",
            "channels_last=false",
            *overrides,
        ],
    )
    seed_everything(0)
    train, _ = load_data(cfg)
    task, _ = build_task(cfg, train, Runtime.create("cpu", cfg.precision, cfg.channels_last))
    task.train()
    step = task.phases(1)[-1].step
    torch.manual_seed(0)
    images = train.images[:8].float() / 255
    result = step(images, train.labels[:8], torch.arange(8), 0)
    return {name: float(value.detach()) for name, value in result.losses.items()}


@pytest.mark.parametrize("overrides", list(GOLDEN))
def test_losses_equal_the_pre_refactor_values(overrides):
    losses = first_step_losses(*overrides)
    assert losses == pytest.approx(GOLDEN[overrides], rel=1e-6, abs=0)
