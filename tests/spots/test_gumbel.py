"""Straight-through Gumbel-softmax and the checkpointable generator."""

from __future__ import annotations

import io

import pytest
import torch

from sakd.spots.gumbel import (
    GUMBEL_EPS,
    SeededGenerator,
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


def test_seeded_generator_is_reproducible_and_restores_state() -> None:
    first = SeededGenerator(3)
    draws = [torch.rand(5, generator=first.on(torch.device("cpu"))) for _ in range(2)]
    again = SeededGenerator(3)
    assert torch.equal(torch.rand(5, generator=again.on(torch.device("cpu"))), draws[0])

    buffer = io.BytesIO()
    torch.save(again.state_dict(), buffer)
    buffer.seek(0)
    restored = SeededGenerator(99)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(torch.rand(5, generator=restored.on(torch.device("cpu"))), draws[1])


def test_state_before_first_draw_round_trips() -> None:
    fresh = SeededGenerator(5)
    copy = SeededGenerator(0)
    copy.load_state_dict(fresh.state_dict())
    cpu = torch.device("cpu")
    assert torch.equal(
        torch.rand(3, generator=copy.on(cpu)), torch.rand(3, generator=fresh.on(cpu))
    )


def test_state_from_another_device_type_continues_deterministically() -> None:
    source = SeededGenerator(4)
    torch.rand(3, generator=source.on(torch.device("cpu")))
    state = {**source.state_dict(), "device_type": "cuda"}
    first, second = SeededGenerator(0), SeededGenerator(0)
    first.load_state_dict(state)
    second.load_state_dict(state)
    cpu = torch.device("cpu")
    assert torch.equal(
        torch.rand(4, generator=first.on(cpu)), torch.rand(4, generator=second.on(cpu))
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_generator_lives_on_the_gpu_and_round_trips() -> None:
    device = torch.device("cuda", 0)
    source = SeededGenerator(8)
    torch.rand(3, generator=source.on(device), device=device)
    restored = SeededGenerator(0)
    restored.load_state_dict(source.state_dict())
    expected = torch.rand(6, generator=source.on(device), device=device)
    assert torch.equal(torch.rand(6, generator=restored.on(device), device=device), expected)
