"""Tiny CIFAR-like staged nets (stem, 3 stages, pooled, head) for fast selector tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from sakd.models.staged import StagedNet
from sakd.spots import SelectorInput

IMAGE_SIZE = 8
NUM_CLASSES = 5


class Block(nn.Module):
    """Residual basic block (conv-BN-ReLU-conv-BN + shortcut, ReLU)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""
        return torch.relu(self.body(x) + self.shortcut(x))


class TinyResNet(StagedNet):
    """Stem (ends in ReLU), three residual stages, pooled vector, linear head."""

    input_size = IMAGE_SIZE

    def __init__(
        self,
        widths: tuple[int, int, int, int],
        num_classes: int = NUM_CLASSES,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        stem, c1, c2, c3 = widths
        self.stages = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(3, stem, 3, stem_stride, 1, bias=False),
                    nn.BatchNorm2d(stem),
                    nn.ReLU(),
                ),
                Block(stem, c1, 1),
                Block(c1, c2, 2),
                Block(c2, c3, 2),
                nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
            ]
        )
        self.head = nn.Linear(c3, num_classes)
        self.stage_roles = ("stem", "stage", "stage", "stage", "pooled")


def _randomize_bn(net: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial BN running statistics so that eval mode differs from train mode."""
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)


def build_pair(seed: int = 0, student_stem_stride: int = 1) -> tuple[TinyResNet, TinyResNet]:
    """(student, teacher): different widths (and optionally sizes), so adaptors change shapes."""
    torch.manual_seed(seed)
    student = TinyResNet((4, 4, 8, 8), stem_stride=student_stem_stride)
    teacher = TinyResNet((6, 8, 12, 16))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        _randomize_bn(student, generator)
        _randomize_bn(teacher, generator)
    teacher.eval().requires_grad_(False)
    return student, teacher


def build_input(
    student: StagedNet, teacher: StagedNet, batch: int = 6, seed: int = 0
) -> SelectorInput:
    """One batch through both nets the way the trainer does it (student train, teacher no-grad)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    labels = torch.randint(NUM_CLASSES, (batch,), generator=generator)
    with torch.no_grad():
        teacher_feats, teacher_logits = teacher.forward_features(images)
    student_feats, student_logits = student.forward_features(images)
    return SelectorInput(
        images, labels, student_feats, teacher_feats, student_logits, teacher_logits
    )


@pytest.fixture
def make_pair() -> Callable[..., tuple[TinyResNet, TinyResNet]]:
    """Factory of fresh (student, teacher) pairs, student in train mode."""
    return build_pair


@pytest.fixture
def make_input() -> Callable[..., SelectorInput]:
    """Factory of one batch run through a pair."""
    return build_input
