"""Own (non-zoo) nets and a generated class-folder tree for the Python API tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

CLASSES = ("blue", "green", "red")
COLOURS = ((40, 60, 200), (40, 190, 60), (210, 50, 40))


def write_tree(
    root: Path, per_class: tuple[int, int] = (8, 4), size: int = 16, classes: int = 3
) -> Path:
    """``root/{train,val}/<class>/*.png``: noisy images whose colour gives the class."""
    rng = np.random.default_rng(0)
    names = CLASSES if classes == 3 else tuple(f"class{k:02d}" for k in range(classes))
    colours = COLOURS if classes == 3 else [tuple(rng.integers(0, 256, 3)) for _ in names]
    for split, count in zip(("train", "val"), per_class, strict=True):
        for name, colour in zip(names, colours, strict=True):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(count):
                noise = rng.integers(-40, 40, size=(size, size, 3))
                pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{k}.png")
    return root


@pytest.fixture
def tree(tmp_path) -> Path:
    return write_tree(tmp_path / "images")


class OwnNet(nn.Module):
    """A user's own net (not a zoo model): conv stem, two strided blocks, pooled linear head."""

    def __init__(self, num_classes: int = 3, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.block1 = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU()
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(2 * width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU()
        )
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.block2(self.block1(x))
        return self.classifier(self.dropout(x.mean(dim=(2, 3))))


class TensorPairs(torch.utils.data.Dataset):
    """A map-style Dataset of (uint8 C×H×W, int) items read from a class-folder split."""

    def __init__(self, split: Path) -> None:
        self.items = []
        for label, name in enumerate(CLASSES):
            for path in sorted((split / name).glob("*.png")):
                pixels = np.asarray(Image.open(path).convert("RGB"))
                self.items.append((torch.from_numpy(pixels.copy()).permute(2, 0, 1), label))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]
