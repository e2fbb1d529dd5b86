"""Straight-through Gumbel-softmax."""

from __future__ import annotations

import torch

from sakd.spots.gumbel import (
    GUMBEL_EPS,
    gumbel_softmax_soft,
    sample_gumbel,
    straight_through_gumbel,
)


def test_noise_follows_the_formula_from_the_generator() -> None:
    noise = sample_gumbel((4, 3, 2), torch.Generator().manual_seed(7))
    uniform = torch.rand((4, 3, 2), generator=torch.Generator().manual_seed(7))
    expected = -torch.log(-torch.log(uniform + GUMBEL_EPS) + GUMBEL_EPS)
    assert noise.dtype == torch.float32
    assert torch.equal(noise, expected)


def test_hard_sample_is_exactly_one_hot_argmax_of_logits_plus_noise() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 3, 2, generator=generator) * 3
    noise = sample_gumbel(logits.shape, generator)
    hard = straight_through_gumbel(logits, noise, tau=5.0)
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(hard.sum(-1), torch.ones(500, 3))
    assert torch.equal(hard.argmax(-1), (logits + noise).argmax(-1))


def test_temperature_changes_gradient_scale_not_decisions() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(200, 2, 2, generator=generator)
    noise = sample_gumbel(logits.shape, generator)
    assert torch.equal(
        straight_through_gumbel(logits, noise, tau=0.5), straight_through_gumbel(logits, noise, 5.0)
    )


def test_straight_through_gradient_equals_soft_sample_gradient() -> None:
    generator = torch.Generator().manual_seed(2)
    base = torch.randn(8, 3, 2, generator=generator)
    noise = sample_gumbel(base.shape, generator)
    upstream = torch.randn(8, 3, 2, generator=generator)

    hard_logits = base.clone().requires_grad_(True)
    (straight_through_gumbel(hard_logits, noise, 5.0) * upstream).sum().backward()
    soft_logits = base.clone().requires_grad_(True)
    (gumbel_softmax_soft(soft_logits, noise, 5.0) * upstream).sum().backward()

    assert hard_logits.grad is not None and hard_logits.grad.abs().sum() > 0
    assert torch.equal(hard_logits.grad, soft_logits.grad)
