"""Batched crop/flip equals a plain per-sample implementation; normalisation values."""

from __future__ import annotations

import pytest
import torch

from sakd.data import augment_batch, crop_flip, draw_crop_flip, normalize


def reference_augment(images: torch.Tensor, top, left, flip, pad: int) -> torch.Tensor:
    """Per-sample loop: zero-pad, take the window at (top, left), mirror horizontally if asked."""
    batch, channels, height, width = images.shape
    out = torch.empty_like(images)
    for k in range(batch):
        padded = torch.zeros(channels, height + 2 * pad, width + 2 * pad, dtype=images.dtype)
        padded[:, pad : pad + height, pad : pad + width] = images[k]
        i, j = int(top[k]), int(left[k])
        window = padded[:, i : i + height, j : j + width]
        if bool(flip[k]):
            window = window.flip(-1)
        out[k] = window
    return out


@pytest.mark.parametrize(
    ("pad", "flip", "shape"),
    [(4, True, (37, 3, 32, 32)), (2, False, (9, 3, 5, 7)), (0, True, (16, 3, 6, 4))],
)
def test_batched_augmentation_equals_per_sample_reference(pad, flip, shape):
    images = torch.randint(
        0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    top, left, flipped = draw_crop_flip(shape[0], pad, flip, torch.Generator().manual_seed(7))
    augmented = augment_batch(images, pad, flip, torch.Generator().manual_seed(7))
    assert augmented.dtype == torch.uint8 and augmented.shape == images.shape
    assert torch.equal(augmented, reference_augment(images, top, left, flipped, pad))
    assert torch.equal(crop_flip(images, top, left, flipped, pad), augmented)


def test_draws_cover_every_offset_and_both_flip_states():
    top, left, flipped = draw_crop_flip(4000, 4, True, torch.Generator().manual_seed(0))
    assert set(top.tolist()) == set(range(9)) and set(left.tolist()) == set(range(9))
    assert 0.45 < flipped.float().mean().item() < 0.55
    _, _, never = draw_crop_flip(100, 4, False, torch.Generator().manual_seed(0))
    assert not never.any()


def test_centre_window_without_flip_is_identity_and_extreme_window_shifts():
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    centre = torch.full((2,), 4)
    assert torch.equal(
        crop_flip(images, centre, centre, torch.zeros(2, dtype=torch.bool), 4), images
    )
    shifted = crop_flip(
        images, torch.zeros(2, dtype=torch.long), centre, torch.zeros(2, dtype=torch.bool), 4
    )
    assert torch.equal(shifted[:, :, 4:], images[:, :, :4]) and not shifted[:, :, :4].any()


def test_no_augmentation_returns_input_unchanged():
    images = torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8)
    assert augment_batch(images, 0, False, torch.Generator().manual_seed(0)) is images


def test_normalize_values():
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    mean, std = (0.5, 0.2, 0.0), (0.5, 0.1, 2.0)
    expected = torch.tensor([(0 - 0.5) / 0.5, (0.2 - 0.2) / 0.1, (1.0 - 0.0) / 2.0]).view(
        1, 3, 1, 1
    )
    out = normalize(images, mean, std)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 2, 2)
    torch.testing.assert_close(out, expected.expand(2, 3, 2, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augmentation_is_identical_on_cuda_and_cpu():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    on_cpu = augment_batch(images, 4, True, torch.Generator().manual_seed(3))
    on_cuda = augment_batch(images.cuda(), 4, True, torch.Generator().manual_seed(3))
    assert torch.equal(on_cuda.cpu(), on_cpu)
