"""bf16 autocast and channels-last on the device: finite losses, and the decisions fp32 makes."""

from __future__ import annotations

import math

import pytest
import torch

from sakd.config import load_config
from sakd.data import iterate_batches, load_dataset
from sakd.engine.build import build_task
from sakd.engine.optim import make_optimisation, min_lr_fraction
from sakd.engine.runtime import Runtime
from sakd.engine.trainer import train_step


def _three_steps(device: str, mode: str, distiller: str, precision: str, memory: bool) -> list:
    """Stats of three training steps of the quick-start pair in ``mode``, on ``device``."""
    cfg = load_config(
        "quickstart",
        [f"distiller.name={distiller}", f"spots.mode={mode}", "batch_size=16", f"device={device}"],
    )
    runtime = Runtime.create(device, precision, memory)
    data = load_dataset("embedded", None, train=True).subset(48)
    torch.manual_seed(0)
    task, _ = build_task(cfg, data, runtime)
    phase = task.phases(cfg.epochs)[-1]
    task.train()
    optimisation = make_optimisation(
        phase,
        cfg.schedule,
        lr_scale=1,
        steps_per_epoch=3,
        min_lr_fraction=min_lr_fraction(cfg.schedule, cfg.lr),
    )
    results = []
    for images, labels, index in iterate_batches(
        data.to(device), 16, train=True, seed=0, epoch=1, device=device
    ):
        result = train_step(runtime, phase, optimisation, images, labels, index, 1)
        results.append(result)
    return [task.spot_names, results]


@pytest.mark.parametrize(
    ("mode", "distiller"),
    [("fixed", "at"), ("adaptive", "at"), ("adaptive", "crd"), ("anti", "at"), ("random", "at")],
)
def test_bf16_channels_last_losses_are_finite_with_the_fp32_decisions_shape(
    device, mode, distiller
):
    spots_fp32, fp32 = _three_steps(device, mode, distiller, "fp32", False)
    spots_bf16, bf16 = _three_steps(device, mode, distiller, "bf16", True)
    assert spots_bf16 == spots_fp32 and len(bf16) == len(fp32) == 3
    for low, full in zip(bf16, fp32, strict=True):
        assert set(low.losses) == set(full.losses)
        for name, value in low.losses.items():
            assert math.isfinite(float(value.detach())), f"{name} is not finite in bf16"
        assert low.logits.shape == full.logits.shape
        assert ("spot_rates" in low.stats) == ("spot_rates" in full.stats)
        if mode != "fixed":
            rates = low.stats["spot_rates"]
            assert rates.shape == full.stats["spot_rates"].shape == (len(spots_fp32),)
            assert bool(((rates >= 0) & (rates <= 1)).all())
