"""The checkpointable seeded generator shared by the spot selectors and CRD."""

from __future__ import annotations

import io

import pytest
import torch

from sakd.seeding import SeededGenerator


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


def _crd_with_labels():
    from sakd.losses import DistillerSetup, get_distiller
    from sakd.models.staged import SpotInfo

    spot = SpotInfo(index=4, role="pooled", channels=3, reduction=0, shape=(3,))
    cls = get_distiller("crd")
    params = cls.Params(feat_dim=2, num_negatives=5)
    return cls(DistillerSetup((spot,), (spot,), params, 10, torch.arange(40) % 4))


def test_crd_negatives_follow_the_seeded_generator_rules() -> None:
    """CRD's sampler is a SeededGenerator: its saved state is the generator's, and a state saved
    on another device type continues from the same derived seed as any SeededGenerator."""
    crd = _crd_with_labels()
    index = torch.arange(6)
    crd.sample_negatives(index)
    state = crd.get_extra_state()
    assert set(state) == {"seed", "device_type", "state"}

    moved = {**state, "device_type": "cuda"}
    first, second = _crd_with_labels(), _crd_with_labels()
    first.set_extra_state(moved)
    second.set_extra_state(moved)
    draws = first.sample_negatives(index)
    assert torch.equal(draws, second.sample_negatives(index))
    restarted = _crd_with_labels()
    restarted.set_extra_state({**state, "state": None})
    assert not torch.equal(draws, restarted.sample_negatives(index))
