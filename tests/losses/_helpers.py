"""Inputs, builders and mask checks shared by the loss tests (the formulas are in ``_reference.py``).

Deterministic inputs come from two fixed sine/cosine patterns, :data:`PATTERN_A` (logit and
feature-map tests) and :data:`PATTERN_B` (relational and contrastive tests): each test's golden
values were computed with one of them. Distillers are built for hand-written spot lists of the
model pairs the paper uses, or for one spot pair.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sakd.losses import DistillContext, Distiller, DistillerSetup, get_distiller
from sakd.models.staged import SpotInfo, resolve_spots

# ----------------------------------------------------------------------------------------------
# deterministic inputs and parameters (no RNG: identical on every machine and torch version)


@dataclass(frozen=True)
class Pattern:
    """values(t) = sin(a·t + φ) + m·cos(b·t + k·φ) over the flat index t; parameter i of a module
    is filled at phase φ = step·i + offset."""

    a: float
    m: float
    b: float
    k: float
    step: float
    offset: float

    def tensor(self, shape: tuple[int, ...], phase: float, scale: float = 1.0) -> Tensor:
        """A float64 tensor of ``shape`` filled with the pattern at ``phase``."""
        t = torch.arange(math.prod(shape), dtype=torch.float64)
        values = torch.sin(self.a * t + phase) + self.m * torch.cos(self.b * t + self.k * phase)
        return (scale * values).reshape(shape)

    @torch.no_grad()
    def fill(self, module: nn.Module) -> None:
        """Overwrite every parameter except VID's ``log_scale`` with the pattern / √fan-in
        (1-D weights, i.e. norm scales, with 1 + 0.2 × pattern)."""
        for index, (name, param) in enumerate(module.named_parameters()):
            if name.endswith("log_scale"):
                continue
            fan_in = math.prod(param.shape[1:]) if param.dim() > 1 else 1
            values = self.tensor(tuple(param.shape), phase=self.step * index + self.offset)
            if param.dim() == 1 and name.endswith("weight"):
                values = 1.0 + 0.2 * values
            param.copy_(values / math.sqrt(fan_in))


PATTERN_A = Pattern(a=0.61, m=0.5, b=1.37, k=2.0, step=0.3, offset=0.1)
PATTERN_B = Pattern(a=0.73, m=0.4, b=1.91, k=3.0, step=0.37, offset=0.2)


def det_feats(spot_list: list[SpotInfo], batch: int, phase: float) -> list[Tensor]:
    """Deterministic float64 features (B, *shape) for each spot (:data:`PATTERN_A`)."""
    return [
        PATTERN_A.tensor((batch, *spot.shape), phase=phase + 0.7 * k)
        for k, spot in enumerate(spot_list)
    ]


def random_feats(spot_list: list[SpotInfo], batch: int, generator: torch.Generator) -> list[Tensor]:
    """Random float32 features (B, *shape) for each spot."""
    return [torch.randn((batch, *spot.shape), generator=generator) for spot in spot_list]


# ----------------------------------------------------------------------------------------------
# spot lists for the model pairs the tests use (written by hand from method.md §1.2)


def spots(
    roles_and_shapes: list[tuple[str, tuple[int, ...]]], input_size: int = 32
) -> list[SpotInfo]:
    """SpotInfo list from (role, shape) pairs."""
    return [
        SpotInfo(
            index=i,
            role=role,
            channels=shape[0],
            reduction=input_size // shape[1] if len(shape) == 3 else 0,
            shape=shape,
        )
        for i, (role, shape) in enumerate(roles_and_shapes)
    ]


RESNET8X4 = spots(
    [
        ("stem", (32, 32, 32)),
        ("stage", (64, 32, 32)),
        ("stage", (128, 16, 16)),
        ("stage", (256, 8, 8)),
        ("pooled", (256,)),
    ]
)
RESNET32X4 = RESNET8X4
VGG13 = spots(
    [
        ("stem", (64, 32, 32)),
        ("stage", (128, 16, 16)),
        ("stage", (256, 8, 8)),
        ("stage", (512, 4, 4)),
        ("stage", (512, 4, 4)),
        ("pooled", (512,)),
    ]
)
MOBILENETV2 = spots(
    [
        ("stem", (32, 16, 16)),
        ("stage", (24, 16, 16)),
        ("stage", (32, 8, 8)),
        ("stage", (96, 4, 4)),
        ("stage", (320, 2, 2)),
        ("pooled", (1280,)),
    ]
)
PAIRS = {
    "resnet32x4->resnet8x4": (RESNET8X4, RESNET32X4),
    "vgg13->mobilenetv2": (MOBILENETV2, VGG13),
}


# small hand-made pairs for golden values: every pooling direction and connector kind appears
SMALL_STUDENT = spots(
    [
        ("stem", (3, 8, 8)),
        ("stage", (4, 8, 8)),
        ("stage", (6, 4, 4)),
        ("stage", (8, 2, 2)),
        ("pooled", (8,)),
    ],
    input_size=8,
)
SMALL_TEACHER = spots(
    [
        ("stem", (4, 8, 8)),
        ("stage", (5, 4, 4)),
        ("stage", (7, 4, 4)),
        ("stage", (9, 4, 4)),
        ("pooled", (9,)),
    ],
    input_size=8,
)


# FSP needs equal channels; the teacher's first stage is half the student's resolution
FSP_STUDENT = spots(
    [("stem", (3, 8, 8)), ("stage", (4, 8, 8)), ("stage", (6, 4, 4)), ("pooled", (6,))],
    input_size=8,
)
FSP_TEACHER = spots(
    [("stem", (3, 8, 8)), ("stage", (4, 4, 4)), ("stage", (6, 4, 4)), ("pooled", (6,))],
    input_size=8,
)


def pooled_spot(dim: int) -> SpotInfo:
    """A pooled-vector spot of size ``dim``."""
    return SpotInfo(index=4, role="pooled", channels=dim, reduction=0, shape=(dim,))


def map_spot(shape: tuple[int, int, int]) -> SpotInfo:
    """A (C, H, W) stage-output spot."""
    return SpotInfo(index=3, role="stage", channels=shape[0], reduction=1, shape=shape)


# ----------------------------------------------------------------------------------------------
# building distillers


def paired_spots(
    student: list[SpotInfo], teacher: list[SpotInfo], role: str
) -> tuple[list[SpotInfo], list[SpotInfo]]:
    """Resolve ``role`` on both networks and pair the spots in order (the shorter list wins)."""
    s, t = resolve_spots(student, role), resolve_spots(teacher, role)
    count = min(len(s), len(t))
    return s[:count], t[:count]


def build(
    name: str,
    student: list[SpotInfo] | SpotInfo,
    teacher: list[SpotInfo] | SpotInfo,
    num_train: int = 100,
    dtype: torch.dtype = torch.float32,
    train_labels: Tensor | None = None,
    **params: object,
) -> Distiller:
    """A distiller by registry name (10 classes), with optional parameter overrides.

    ``student`` / ``teacher`` are whole spot lists (the distiller's spot role is resolved on both
    and the spots paired) or one :class:`SpotInfo` each (the only pair). ``train_labels``: the
    training split's labels (N,); by default ``num_train`` labels cycling through the 10 classes.
    """
    cls = get_distiller(name)
    if isinstance(student, SpotInfo) and isinstance(teacher, SpotInfo):
        s, t = [student], [teacher]
    else:
        s, t = paired_spots(student, teacher, cls.spot_role)
    if train_labels is None:
        train_labels = torch.arange(num_train) % 10
    setup = DistillerSetup(tuple(s), tuple(t), cls.Params(**params), 10, train_labels)
    return cls(setup).to(dtype)


def context(labels: Tensor | int, index: Tensor | None = None, epoch: int = 100) -> DistillContext:
    """A context with ``labels`` (an int B: B dummy labels), dataset indices and an epoch past
    every warm-up."""
    if isinstance(labels, int):
        labels = torch.zeros(labels, dtype=torch.long)
    return DistillContext(labels=labels, index=index, epoch=epoch)


def golden_setup(name: str, student: list[SpotInfo], teacher: list[SpotInfo], **params: object):
    """A float64 distiller with deterministic parameters, its paired deterministic features (B=4)."""
    distiller = build(name, student, teacher, dtype=torch.float64, **params)
    PATTERN_A.fill(distiller)
    student_feats = det_feats(distiller.student_spots, 4, phase=0.5)
    teacher_feats = det_feats(distiller.teacher_spots, 4, phase=1.9)
    return distiller, student_feats, teacher_feats


# ----------------------------------------------------------------------------------------------
# masks: which rows (of a batch of 6) each spot column selects


MASKS = {
    "none": [],
    "one": [3],
    "two": [1, 4],
    "four": [0, 2, 3, 5],
    "gappy": [0, 2, 5],
    "all": [0, 1, 2, 3, 4, 5],
}


def random_selection(seed: int, batch: int = 6) -> list[int]:
    """Rows of a seeded Bernoulli(0.5) draw, as the random spot mode makes them."""
    draw = torch.rand(batch, generator=torch.Generator().manual_seed(seed))
    return (draw < 0.5).nonzero().flatten().tolist()


MASKS.update({f"random{seed}": random_selection(seed) for seed in (11, 12, 13)})

# the columns of a multi-spot mask cycle through these selections
COLUMN_CYCLE = [MASKS["all"], MASKS["none"], [2], MASKS["four"], [1, 2, 3, 4]]
MASK_CASES = [-1, 0, 1, 2, 3, 4]


def weight_matrix(
    columns: list[list[int]], batch: int = 6, dtype: torch.dtype = torch.float64
) -> Tensor:
    """(batch, len(columns)) 0/1 weights: column k selects the rows ``columns[k]``."""
    weights = torch.zeros(batch, len(columns), dtype=dtype)
    for k, selected in enumerate(columns):
        weights[selected, k] = 1.0
    return weights


def weight_column(selected: list[int], batch: int = 6) -> Tensor:
    """(batch, 1) float64 0/1 weights selecting ``selected``."""
    return weight_matrix([selected], batch)


def mask_matrix(case: int, num_spots: int) -> Tensor:
    """(6, S) float32 0/1 weights: column k is COLUMN_CYCLE[(case + k) % 5]; case −1 is all zeros."""
    if case < 0:
        return torch.zeros(6, num_spots)
    cycle = len(COLUMN_CYCLE)
    columns = [COLUMN_CYCLE[(case + k) % cycle] for k in range(num_spots)]
    return weight_matrix(columns, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------
# the masking contract: weighted value == sub-batch reference × fraction


def subbatch_sum(
    weights: Tensor, spot_reference: Callable[[int, Tensor], Tensor], min_selected: int = 1
) -> Tensor:
    """Σ_k reference(k, rows selected by column k) · |selected| / B in float64; a column with
    fewer than ``min_selected`` selected rows gives 0."""
    batch = weights.shape[0]
    total = torch.zeros((), dtype=torch.float64)
    for k in range(weights.shape[1]):
        selected = weights[:, k] > 0.5
        count = int(selected.sum())
        if count and count >= min_selected:
            total = total + spot_reference(k, selected).double() * count / batch
    return total


def assert_gated_grads(leaves: list[Tensor], all_zero: bool) -> None:
    """Gradients are finite where they exist; with an all-zero mask they are exactly zero."""
    for leaf in leaves:
        if leaf.grad is None:
            continue
        assert torch.isfinite(leaf.grad).all()
        if all_zero:
            assert torch.count_nonzero(leaf.grad) == 0


def exercise_on_pair(
    name: str, student: list[SpotInfo], teacher: list[SpotInfo], **params: object
) -> Tensor:
    """Build ``name`` for the pair, run a gated forward/backward on random maps and check it.

    Checks: a finite scalar; finite gradients for the student maps and every parameter that got
    one; no gradient into teacher maps that require one; all-zero weights give exactly 0.
    Returns the value with weights [1, 0, 1, 1] in every column.
    """
    distiller = build(name, student, teacher, **params)
    generator = torch.Generator().manual_seed(0)
    student_feats = [
        f.requires_grad_() for f in random_feats(distiller.student_spots, 4, generator)
    ]
    teacher_feats = [
        f.requires_grad_() for f in random_feats(distiller.teacher_spots, 4, generator)
    ]
    ctx = context(torch.tensor([0, 1, 2, 3]))
    weights = torch.tensor([1.0, 0.0, 1.0, 1.0])[:, None].repeat(1, distiller.num_spots)
    value = distiller(student_feats, teacher_feats, weights, ctx)
    assert value.shape == () and torch.isfinite(value)
    if value.requires_grad:
        value.backward()
    for tensor in [*student_feats, *distiller.parameters()]:
        assert tensor.grad is None or torch.isfinite(tensor.grad).all()
    assert all(t.grad is None for t in teacher_feats)
    zero = distiller(student_feats, teacher_feats, torch.zeros_like(weights), ctx)
    assert zero.item() == 0.0
    return value.detach()


def check_gated_equals_subbatch(
    name: str,
    case: int,
    seed: int,
    reference,
    trainable=lambda distiller: [],
    atol: float = 1e-7,
    student_spots: list[SpotInfo] | None = None,
    teacher_spots: list[SpotInfo] | None = None,
):
    """The masking contract on random features: weighted value == sub-batch reference × fraction.

    ``reference(distiller, student, teacher)`` returns ``(k, selected) -> loss`` for that spot's
    selected rows. Checks finite gradients (exactly zero with an all-zero mask, then value 0) on
    the student features and ``trainable(distiller)``; returns the distiller and the weights.
    """
    distiller = build(name, student_spots or SMALL_STUDENT, teacher_spots or SMALL_TEACHER)
    generator = torch.Generator().manual_seed(seed + case)
    student = [f.requires_grad_() for f in random_feats(distiller.student_spots, 6, generator)]
    teacher = random_feats(distiller.teacher_spots, 6, generator)
    weights = mask_matrix(case, distiller.num_spots)
    value = distiller(student, teacher, weights, context(torch.zeros(6)))
    expected = subbatch_sum(weights, reference(distiller, student, teacher))
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=atol)
    value.backward()
    assert_gated_grads([*student, *trainable(distiller)], all_zero=not weights.any())
    if not weights.any():
        assert value.item() == 0.0
    return distiller, weights


def check_relational_mask(
    distiller: Distiller,
    student: Tensor,
    teacher: Tensor,
    selected: list[int],
    reference: Callable[[Tensor, Tensor], Tensor],
) -> None:
    """Weighted call == |selected|/B × reference on the selected rows (value and student grads);
    fewer than two selected samples give exactly 0 with zero gradients."""
    batch = student.shape[0]
    student = student.detach().clone().requires_grad_(True)
    value = distiller([student], [teacher], weight_column(selected, batch), context(batch))
    value.backward()

    reference_student = student.detach().clone().requires_grad_(True)
    expected = subbatch_sum(
        weight_column(selected, batch),
        lambda _, sel: reference(reference_student[sel], teacher[sel]),
        min_selected=2,
    )
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-14)
    if len(selected) < 2:
        assert value.item() == 0.0
        assert torch.equal(student.grad, torch.zeros_like(student))
        return
    expected.backward()
    torch.testing.assert_close(student.grad, reference_student.grad, rtol=1e-8, atol=1e-12)
