"""The ImageNet-style transforms against per-sample references: torchvision's algorithm and Pillow."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from sakd.data.transforms import (
    EvalTransform,
    TrainTransform,
    center_crop_box,
    eval_resize_size,
    random_resized_crop_box,
    resize,
    shorter_side_size,
)


def reference_box(height, width, scale, ratio, uniforms, integers):
    """torchvision RandomResizedCrop.get_params written out, fed with pre-drawn random numbers.

    ``uniforms`` yields U[0, 1) floats, ``integers(high)`` a draw in [0, high).
    """
    for _ in range(10):
        target_area = height * width * (scale[0] + (scale[1] - scale[0]) * next(uniforms))
        log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * next(uniforms)
        aspect = math.exp(log_r)
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return integers(height - h + 1), integers(width - w + 1), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def replay(seed):
    """The same generator as the transform's, exposed as reference draw functions."""
    generator = torch.Generator().manual_seed(seed)

    def uniforms():
        while True:
            yield float(torch.rand(1, generator=generator))

    def integers(high):
        return int(torch.randint(0, high, (1,), generator=generator))

    return uniforms(), integers


def pil_resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pillow's bilinear (antialiased) resize of a uint8 (3, H, W) tensor."""
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    out = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
    return torch.from_numpy(out.copy()).permute(2, 0, 1)


def assert_close_to_pillow(ours: torch.Tensor, reference: torch.Tensor) -> None:
    """Within two uint8 levels anywhere, and one level for all but a few pixels (rounding)."""
    assert ours.shape == reference.shape
    diff = (ours.int() - reference.int()).abs()
    assert int(diff.max()) <= 2
    assert float((diff > 1).float().mean()) < 0.002


def random_image(height, width, seed):
    return torch.randint(
        0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


@pytest.mark.parametrize(
    ("height", "width", "scale", "ratio"),
    [
        (375, 500, (0.08, 1.0), (3 / 4, 4 / 3)),
        (64, 64, (0.08, 1.0), (3 / 4, 4 / 3)),
        (20, 300, (0.5, 1.0), (3 / 4, 4 / 3)),  # very wide: often the central fallback
        (300, 20, (0.9, 1.0), (3 / 4, 4 / 3)),  # very tall
        (50, 60, (1.0, 1.0), (1.0, 1.0)),
    ],
)
def test_crop_box_follows_torchvision_algorithm(height, width, scale, ratio):
    for seed in range(40):
        ours = random_resized_crop_box(
            height, width, scale, ratio, torch.Generator().manual_seed(seed)
        )
        assert ours == reference_box(height, width, scale, ratio, *replay(seed))
        top, left, h, w = ours
        assert top >= 0 and left >= 0 and h > 0 and w > 0
        assert top + h <= height and left + w <= width


def test_crop_box_area_and_aspect_are_in_range_when_a_try_fits():
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        _, _, h, w = random_resized_crop_box(400, 400, (0.08, 1.0), (3 / 4, 4 / 3), generator)
        # rounding of each side moves the area and aspect by at most one pixel's worth
        assert 0.08 * 400 * 400 * 0.9 <= h * w <= 400 * 400
        assert 3 / 4 * 0.95 <= w / h <= 4 / 3 * 1.05


@pytest.mark.parametrize(
    ("height", "width", "out_h", "out_w"),
    [(50, 70, 32, 32), (100, 80, 224, 224), (37, 90, 20, 61), (300, 400, 224, 224), (8, 8, 8, 8)],
)
def test_resize_matches_pillow_bilinear(height, width, out_h, out_w):
    image = random_image(height, width, height * width)
    ours = resize(image, out_h, out_w)
    assert ours.dtype == torch.uint8 and ours.shape == (3, out_h, out_w)
    assert_close_to_pillow(ours, pil_resize(image, out_h, out_w))


def test_train_transform_is_crop_resize_flip_of_its_draws():
    image = random_image(90, 120, 3)
    transform = TrainTransform(32)
    for seed in range(30):
        out = transform(image, torch.Generator().manual_seed(seed))
        replayed = torch.Generator().manual_seed(seed)
        top, left, h, w = random_resized_crop_box(90, 120, (0.08, 1.0), (3 / 4, 4 / 3), replayed)
        flip = float(torch.rand(1, generator=replayed)) < 0.5
        expected = pil_resize(image[:, top : top + h, left : left + w].contiguous(), 32, 32)
        if flip:
            expected = expected.flip(-1)
        assert_close_to_pillow(out, expected)


def test_train_transform_is_a_pure_function_of_the_generator_seed():
    image = random_image(60, 80, 4)
    transform = TrainTransform(24)
    a = transform(image, torch.Generator().manual_seed(7))
    b = transform(image, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    outs = {transform(image, torch.Generator().manual_seed(s)).sum().item() for s in range(10)}
    assert len(outs) > 1


def test_no_flip_when_flip_is_off():
    image = random_image(40, 40, 5)
    transform = TrainTransform(40, scale=(1.0, 1.0), ratio=(1.0, 1.0), horizontal_flip=False)
    for seed in range(10):
        assert torch.equal(transform(image, torch.Generator().manual_seed(seed)), image)


def test_eval_sizes_are_torchvisions():
    assert eval_resize_size(224, 0.875) == 256
    assert eval_resize_size(32, 0.875) == 36
    assert eval_resize_size(32, 1.0) == 32
    assert shorter_side_size(375, 500, 256) == (256, 341)
    assert shorter_side_size(500, 375, 256) == (341, 256)
    assert center_crop_box(256, 341, 224) == (16, 58)


@pytest.mark.parametrize(("height", "width"), [(375, 500), (500, 375), (64, 64), (30, 31)])
def test_eval_transform_is_resize_then_central_crop(height, width):
    image = random_image(height, width, 6)
    out = EvalTransform(24)(image)
    short = math.floor(24 / 0.875)
    new_h, new_w = (
        (short, int(short * width / height))
        if height <= width
        else (int(short * height / width), short)
    )
    top, left = round((new_h - 24) / 2), round((new_w - 24) / 2)
    expected = pil_resize(image, new_h, new_w)[:, top : top + 24, left : left + 24]
    assert_close_to_pillow(out, expected)
