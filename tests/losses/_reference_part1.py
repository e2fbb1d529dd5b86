"""Straightforward re-statements of the RepDistiller / mdistiller formulas, written independently
of sakd.losses (per-sample loops, obvious ops), plus the inputs and spot lists the tests share.

Every ``ref_*`` function computes the published *batch* loss on whatever batch it is given (the
test passes the selected sub-batch and multiplies by |selected| / B itself).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sakd.losses import DistillContext, Distiller, get_distiller
from sakd.models.staged import SpotInfo, resolve_spots

# ----------------------------------------------------------------------------------------------
# deterministic inputs and parameters (no RNG: identical on every machine and torch version)


def det_tensor(shape: tuple[int, ...], phase: float, scale: float = 1.0) -> Tensor:
    """A float64 tensor of ``shape`` filled with a fixed sine/cosine pattern."""
    n = math.prod(shape)
    t = torch.arange(n, dtype=torch.float64)
    values = torch.sin(0.61 * t + phase) + 0.5 * torch.cos(1.37 * t + 2.0 * phase)
    return (scale * values).reshape(shape)


@torch.no_grad()
def fill_deterministic(module: nn.Module) -> None:
    """Overwrite every parameter except VID's ``log_scale`` with a fixed pattern scaled by fan-in."""
    for index, (name, param) in enumerate(module.named_parameters()):
        if name.endswith("log_scale"):
            continue
        fan_in = math.prod(param.shape[1:]) if param.dim() > 1 else 1
        pattern = det_tensor(tuple(param.shape), phase=0.3 * index + 0.1)
        if param.dim() == 1 and name.endswith("weight"):
            pattern = 1.0 + 0.2 * pattern
        param.copy_(pattern / math.sqrt(fan_in))


# ----------------------------------------------------------------------------------------------
# shared reference pieces


def avg_pool_to(x: Tensor, height: int, width: int) -> Tensor:
    """Average pooling by an integer factor, written as a reshape: (B, C, H, W) -> (B, C, h, w)."""
    b, c, h, w = x.shape
    return x.reshape(b, c, height, h // height, width, w // width).mean(dim=(3, 5))


def pool_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Pool the map with the larger height to the smaller one's size (RepDistiller rule)."""
    if a.shape[2] > b.shape[2]:
        a = avg_pool_to(a, b.shape[2], b.shape[3])
    elif a.shape[2] < b.shape[2]:
        b = avg_pool_to(b, a.shape[2], a.shape[3])
    return a, b


def unit(v: Tensor) -> Tensor:
    """v / ‖v‖₂ for a 1-D tensor."""
    return v / v.norm()


# ----------------------------------------------------------------------------------------------
# the formulas


def ref_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton KD, RepDistiller DistillKL: Σ_i Σ_c p_t log(p_t / p_s) · T² / B."""
    total = student_logits.new_zeros(())
    for s, t in zip(student_logits, teacher_logits, strict=True):
        p_s = torch.softmax(s / temperature, dim=0)
        p_t = torch.softmax(t / temperature, dim=0)
        total = total + (p_t * (p_t.log() - p_s.log())).sum()
    return total * temperature**2 / student_logits.shape[0]


def ref_dkd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    alpha: float,
    beta: float,
    temperature: float,
) -> Tensor:
    """DKD (mdistiller dkd_loss, without warm-up): T²·(α·TCKD + β·NCKD) averaged over the batch.

    TCKD: KL between [p(target), p(rest)]; NCKD: KL between the softmaxes over the non-target
    classes only (the target class is dropped rather than suppressed by −1000).
    """
    total = student_logits.new_zeros(())
    for s, t, y in zip(student_logits, teacher_logits, labels.tolist(), strict=True):
        p_s = torch.softmax(s / temperature, dim=0)
        p_t = torch.softmax(t / temperature, dim=0)
        rest = [c for c in range(s.shape[0]) if c != y]
        b_s = torch.stack([p_s[y], p_s[rest].sum()])
        b_t = torch.stack([p_t[y], p_t[rest].sum()])
        tckd = (b_t * (b_t.log() - b_s.log())).sum()
        q_s = torch.softmax(s[rest] / temperature, dim=0)
        q_t = torch.softmax(t[rest] / temperature, dim=0)
        nckd = (q_t * (q_t.log() - q_s.log())).sum()
        total = total + alpha * tckd + beta * nckd
    return total * temperature**2 / student_logits.shape[0]


def ref_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """nn.MSELoss: mean of squared differences over every element."""
    return ((prediction - target) ** 2).sum() / prediction.numel()


def ref_at(student: Tensor, teacher: Tensor, p: float = 2.0) -> Tensor:
    """RepDistiller Attention.at_loss: mean over batch and positions of (a_s − a_t)²."""
    student, teacher = pool_pair(student, teacher)
    squares = []
    for s, t in zip(student, teacher, strict=True):
        a_s = unit((s**p).mean(dim=0).reshape(-1))
        a_t = unit((t**p).mean(dim=0).reshape(-1))
        squares.append((a_s - a_t) ** 2)
    return torch.stack(squares).mean()


def ref_nst(student: Tensor, teacher: Tensor) -> Tensor:
    """RepDistiller NSTLoss (full MMD, polynomial kernel (xᵀy)²) through explicit C×C matrices."""
    student, teacher = pool_pair(student, teacher)
    tt, ss, st = [], [], []
    for s, t in zip(student, teacher, strict=True):
        s = s.reshape(s.shape[0], -1)
        t = t.reshape(t.shape[0], -1)
        s = s / s.norm(dim=1, keepdim=True)
        t = t / t.norm(dim=1, keepdim=True)
        tt.append((t @ t.T) ** 2)
        ss.append((s @ s.T) ** 2)
        st.append((t @ s.T) ** 2)
    return torch.stack(tt).mean() + torch.stack(ss).mean() - 2 * torch.stack(st).mean()


def ref_vid(
    student: Tensor, teacher: Tensor, conv_weights: list[Tensor], log_scale: Tensor, eps: float
) -> Tensor:
    """RepDistiller VIDLoss with the 1×1 regressor written as channel matrix products."""
    student, teacher = pool_pair(student, teacher)
    w1, w2, w3 = (w[:, :, 0, 0] for w in conv_weights)
    variance = torch.log(1.0 + torch.exp(log_scale)) + eps
    values = []
    for s, t in zip(student, teacher, strict=True):
        x = s.reshape(s.shape[0], -1)
        mean = w3 @ torch.relu(w2 @ torch.relu(w1 @ x))
        target = t.reshape(t.shape[0], -1)
        nll = 0.5 * ((mean - target) ** 2 / variance[:, None] + torch.log(variance)[:, None])
        values.append(nll)
    return torch.stack(values).mean()


def vid_init_log_scale(init_pred_var: float, eps: float) -> float:
    """RepDistiller's initial log_scale: log(exp(init_pred_var − eps) − 1)."""
    return math.log(math.exp(init_pred_var - eps) - 1.0)


def ref_ft(student_factor: Tensor, teacher_factor: Tensor, p1: float = 2.0) -> Tensor:
    """RepDistiller FactorTransfer (p2 = 1): mean |code_s − code_t| over batch and positions."""
    student_factor, teacher_factor = pool_pair(student_factor, teacher_factor)
    diffs = []
    for s, t in zip(student_factor, teacher_factor, strict=True):
        code_s = unit((s**p1).mean(dim=0).reshape(-1))
        code_t = unit((t**p1).mean(dim=0).reshape(-1))
        diffs.append((code_s - code_t).abs())
    return torch.stack(diffs).mean()


def ref_ab_layer(
    student: Tensor, teacher: Tensor, layer: int, num_layers: int, margin: float = 1.0
) -> Tensor:
    """One layer of RepDistiller ABLoss: 2^(k−n+1) · Σ elements / B · 3/1000."""
    below = ((student > -margin) & (teacher <= 0)).to(student.dtype)
    above = ((student <= margin) & (teacher > 0)).to(student.dtype)
    elementwise = (student + margin) ** 2 * below + (student - margin) ** 2 * above
    return 2.0 ** (layer - num_layers + 1) * elementwise.sum() / student.shape[0] / 1000 * 3


def ref_ab(students: list[Tensor], teachers: list[Tensor], margin: float = 1.0) -> Tensor:
    """RepDistiller ABLoss summed over its layers."""
    n = len(students)
    return sum(
        ref_ab_layer(s, t, k, n, margin)
        for k, (s, t) in enumerate(zip(students, teachers, strict=True))
    )


def ref_fsp_matrices(feats: list[Tensor]) -> list[Tensor]:
    """RepDistiller FSP.compute_fsp: G[b, j, i] = mean_p upper[b, j, p] · lower[b, i, p]."""
    matrices = []
    for lower, upper in zip(feats[:-1], feats[1:], strict=True):
        lower, upper = pool_pair(lower, upper)
        per_sample = []
        for lo, up in zip(lower, upper, strict=True):
            lo = lo.reshape(lo.shape[0], -1)
            up = up.reshape(up.shape[0], -1)
            per_sample.append(torch.einsum("jp,ip->ji", up, lo) / lo.shape[1])
        matrices.append(torch.stack(per_sample))
    return matrices


def ref_fsp_terms(students: list[Tensor], teachers: list[Tensor]) -> list[Tensor]:
    """RepDistiller FSP loss group: mean squared difference of each pair's flow matrices."""
    return [
        ((s - t) ** 2).mean()
        for s, t in zip(ref_fsp_matrices(students), ref_fsp_matrices(teachers), strict=True)
    ]


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


def paired_spots(
    student: list[SpotInfo], teacher: list[SpotInfo], role: str
) -> tuple[list[SpotInfo], list[SpotInfo]]:
    """Resolve ``role`` on both networks and pair the spots in order (the shorter list wins)."""
    s, t = resolve_spots(student, role), resolve_spots(teacher, role)
    count = min(len(s), len(t))
    return s[:count], t[:count]


def build(
    name: str, student: list[SpotInfo], teacher: list[SpotInfo], **params: object
) -> Distiller:
    """A distiller by registry name for a student/teacher pair, with optional parameter overrides."""
    cls = get_distiller(name)
    s, t = paired_spots(student, teacher, cls.spot_role)
    return cls(s, t, cls.Params(**params), num_classes=10, num_train=100)


def random_feats(spot_list: list[SpotInfo], batch: int, generator: torch.Generator) -> list[Tensor]:
    """Random float32 features (B, *shape) for each spot."""
    return [torch.randn((batch, *spot.shape), generator=generator) for spot in spot_list]


def context(labels: Tensor, epoch: int = 100) -> DistillContext:
    """A context with labels and an epoch past every warm-up."""
    return DistillContext(labels=labels, index=torch.arange(labels.shape[0]), epoch=epoch)


MASKS_B6 = [
    [1, 1, 1, 1, 1, 1],
    [0, 0, 0, 0, 0, 0],
    [0, 0, 1, 0, 0, 0],
    [1, 0, 1, 1, 0, 1],
    [0, 1, 1, 1, 1, 0],
]

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


def det_feats(spot_list: list[SpotInfo], batch: int, phase: float) -> list[Tensor]:
    """Deterministic float64 features (B, *shape) for each spot."""
    return [
        det_tensor((batch, *spot.shape), phase=phase + 0.7 * k) for k, spot in enumerate(spot_list)
    ]


def subbatch_sum(weights: Tensor, spot_reference) -> Tensor:
    """Σ_k reference(k, rows selected by column k) · |selected| / B, empty columns giving 0."""
    batch = weights.shape[0]
    total = torch.zeros((), dtype=torch.float64)
    for k in range(weights.shape[1]):
        selected = weights[:, k] > 0.5
        count = int(selected.sum())
        if count:
            total = total + spot_reference(k, selected).double() * count / batch
    return total


def mask_matrix(case: int, num_spots: int) -> Tensor:
    """(6, S) 0/1 weights: column k is MASKS_B6[(case + k) % 5]; case −1 is all zeros."""
    if case < 0:
        return torch.zeros(6, num_spots)
    columns = [torch.tensor(MASKS_B6[(case + k) % len(MASKS_B6)]) for k in range(num_spots)]
    return torch.stack(columns, dim=1).float()


MASK_CASES = [-1, 0, 1, 2, 3, 4]


def assert_gated_grads(leaves: list[Tensor], all_zero: bool) -> None:
    """Gradients exist and are finite; with an all-zero mask they are exactly zero."""
    for leaf in leaves:
        if leaf.grad is None:
            continue
        assert torch.isfinite(leaf.grad).all()
        if all_zero:
            assert torch.count_nonzero(leaf.grad) == 0


# FSP needs equal channels; the teacher's first stage is half the student's resolution
FSP_STUDENT = spots(
    [("stem", (3, 8, 8)), ("stage", (4, 8, 8)), ("stage", (6, 4, 4)), ("pooled", (6,))],
    input_size=8,
)
FSP_TEACHER = spots(
    [("stem", (3, 8, 8)), ("stage", (4, 4, 4)), ("stage", (6, 4, 4)), ("pooled", (6,))],
    input_size=8,
)


def golden_setup(name: str, student: list[SpotInfo], teacher: list[SpotInfo], **params: object):
    """A float64 distiller with deterministic parameters, its paired deterministic features (B=4)."""
    distiller = build(name, student, teacher, **params).double()
    fill_deterministic(distiller)
    student_feats = det_feats(distiller.student_spots, 4, phase=0.5)
    teacher_feats = det_feats(distiller.teacher_spots, 4, phase=1.9)
    return distiller, student_feats, teacher_feats


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
