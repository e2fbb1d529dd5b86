"""Straightforward re-statements of RepDistiller's SP, CC, RKD, PKT and CRD formulas, written
independently of sakd.losses (loops over samples, pairs and triplets), plus shared test helpers.

Every ``ref_*`` loss computes the published *batch* loss on whatever batch it is given; the tests
pass the selected sub-batch and multiply by |selected| / B themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from sakd.losses import DistillContext, Distiller, get_distiller
from sakd.models.staged import SpotInfo

# ----------------------------------------------------------------------------------------------
# deterministic inputs (no RNG: identical on every machine and torch version)


def pattern(shape: tuple[int, ...], phase: float, scale: float = 1.0) -> Tensor:
    """A float64 tensor of ``shape`` filled with a fixed sine/cosine pattern."""
    n = math.prod(shape)
    t = torch.arange(n, dtype=torch.float64)
    values = torch.sin(0.73 * t + phase) + 0.4 * torch.cos(1.91 * t + 3.0 * phase)
    return (scale * values).reshape(shape)


@torch.no_grad()
def fill_parameters(module: torch.nn.Module) -> None:
    """Overwrite every parameter with a fixed pattern scaled by its fan-in."""
    for position, param in enumerate(module.parameters()):
        fan_in = math.prod(param.shape[1:]) if param.dim() > 1 else 1
        param.copy_(pattern(tuple(param.shape), 0.37 * position + 0.2) / math.sqrt(fan_in))


# ----------------------------------------------------------------------------------------------
# building distillers and masks


def pooled_spot(dim: int) -> SpotInfo:
    """A pooled-vector spot of size ``dim``."""
    return SpotInfo(index=4, role="pooled", channels=dim, reduction=0, shape=(dim,))


def map_spot(shape: tuple[int, int, int]) -> SpotInfo:
    """A (C, H, W) stage-output spot."""
    return SpotInfo(index=3, role="stage", channels=shape[0], reduction=1, shape=shape)


def build(
    name: str, student: SpotInfo, teacher: SpotInfo, num_train: int = 200, **params
) -> Distiller:
    """A float64 distiller of ``name`` for one spot pair."""
    cls = get_distiller(name)
    return cls([student], [teacher], cls.Params(**params), 10, num_train).double()


def context(batch: int, index: Tensor | None = None) -> DistillContext:
    """A context with dummy labels and the given dataset indices."""
    return DistillContext(labels=torch.zeros(batch, dtype=torch.long), index=index)


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


def weight_column(selected: list[int], batch: int = 6) -> Tensor:
    """(batch, 1) float64 0/1 weights selecting ``selected``."""
    weights = torch.zeros(batch, 1, dtype=torch.float64)
    weights[selected, 0] = 1.0
    return weights


def gated_reference(
    selected: list[int], batch: int, reference: Callable[[list[int]], Tensor], min_selected: int
) -> Tensor:
    """|selected| / B × reference(selected sub-batch); exactly 0 below ``min_selected`` samples."""
    if len(selected) < min_selected:
        return torch.zeros((), dtype=torch.float64)
    return reference(selected) * len(selected) / batch


def assert_finite_grads(*tensors: Tensor) -> None:
    """Every tensor's gradient exists and is finite."""
    for tensor in tensors:
        assert tensor.grad is not None
        assert torch.isfinite(tensor.grad).all()


# ----------------------------------------------------------------------------------------------
# the formulas


def huber(x: Tensor) -> Tensor:
    """Smooth-L1 with beta 1: 0.5 x² below 1 in magnitude, |x| − 0.5 above."""
    return torch.where(x.abs() < 1, 0.5 * x * x, x.abs() - 0.5)


def ref_sp(student: Tensor, teacher: Tensor) -> Tensor:
    """Similarity: ‖normalise_rows(G_t) − normalise_rows(G_s)‖²_F / b², G = F Fᵀ."""
    b = student.shape[0]

    def normalised_gram(feats: Tensor) -> Tensor:
        flat = feats.reshape(b, -1)
        rows = []
        for i in range(b):
            row = torch.stack([torch.dot(flat[i], flat[j]) for j in range(b)])
            rows.append(row / row.norm())
        return torch.stack(rows)

    diff = normalised_gram(teacher) - normalised_gram(student)
    return (diff * diff).sum() / (b * b)


def ref_pkt(student: Tensor, teacher: Tensor, eps: float = 1e-7) -> Tensor:
    """PKT: mean over pairs of P_t log((P_t + eps)/(P_s + eps)), P from (cos + 1)/2 row-normalised."""
    b = student.shape[0]

    def probabilities(feats: Tensor) -> list[list[Tensor]]:
        unit = [f / (f.norm() + eps) for f in feats]
        sims = [[(torch.dot(unit[i], unit[j]) + 1) / 2 for j in range(b)] for i in range(b)]
        return [[s / sum(row) for s in row] for row in sims]

    p_s, p_t = probabilities(student), probabilities(teacher)
    total = sum(
        p_t[i][j] * torch.log((p_t[i][j] + eps) / (p_s[i][j] + eps))
        for i in range(b)
        for j in range(b)
    )
    return total / (b * b)


def ref_rkd(
    student: Tensor, teacher: Tensor, w_dist: float = 25.0, w_angle: float = 50.0
) -> Tensor:
    """RKD: w_dist·smoothL1(distances / mean distance) + w_angle·smoothL1(angle cosines)."""
    b = student.shape[0]

    def distances(feats: Tensor) -> Tensor:
        d = torch.zeros(b, b, dtype=feats.dtype)
        for i in range(b):
            for j in range(b):
                if i != j:
                    d[i, j] = (feats[i] - feats[j]).norm()
        return d / (d.sum() / (b * (b - 1)))

    def angles(feats: Tensor) -> Tensor:
        a = torch.zeros(b, b, b, dtype=feats.dtype)
        for i in range(b):
            for j in range(b):
                for k in range(b):
                    u, v = feats[j] - feats[i], feats[k] - feats[i]
                    if j != i and k != i:
                        a[i, j, k] = torch.dot(u, v) / (u.norm() * v.norm())
        return a

    distance_loss = huber(distances(student) - distances(teacher)).sum() / b**2
    angle_loss = huber(angles(student) - angles(teacher)).sum() / b**3
    return w_dist * distance_loss + w_angle * angle_loss


def ref_cc(student_embedded: Tensor, teacher_embedded: Tensor) -> Tensor:
    """Correlation: mean over consecutive rows (i, i+1) of Σ_d |Δ_i|_d · |Δ_{i+1}|_d."""
    delta = (student_embedded - teacher_embedded).abs()
    terms = [torch.dot(delta[i], delta[i + 1]) for i in range(delta.shape[0] - 1)]
    return torch.stack(terms).mean()


def ref_linear(x: Tensor, linear: torch.nn.Linear) -> Tensor:
    """x Wᵀ + b, row by row."""
    return torch.stack([linear.weight @ row.reshape(-1) + linear.bias for row in x])


def ref_embed_unit(x: Tensor, linear: torch.nn.Linear) -> Tensor:
    """Linear then division by the L2 norm, row by row (CRD's Embed)."""
    rows = ref_linear(x, linear)
    return torch.stack([r / r.norm() for r in rows])


def ref_crd_step(
    student_embedded: Tensor,
    teacher_embedded: Tensor,
    contrast_index: Tensor,
    student_bank: Tensor,
    teacher_bank: Tensor,
    normalizers: tuple[float, float] | None,
    temperature: float,
    momentum: float,
) -> tuple[Tensor, Tensor, Tensor, tuple[float, float]]:
    """One RepDistiller CRD step (gather-then-bmm scores, ContrastLoss, memory update).

    Returns (loss, new student bank, new teacher bank, (Z_student_anchor, Z_teacher_anchor)).
    """
    b, k_plus_1 = contrast_index.shape
    num_train = student_bank.shape[0]
    teacher_rows = teacher_bank[contrast_index.reshape(-1)].reshape(b, k_plus_1, -1)
    student_rows = student_bank[contrast_index.reshape(-1)].reshape(b, k_plus_1, -1)
    out_student = torch.exp(
        torch.bmm(teacher_rows, student_embedded[:, :, None])[:, :, 0] / temperature
    )
    out_teacher = torch.exp(
        torch.bmm(student_rows, teacher_embedded[:, :, None])[:, :, 0] / temperature
    )
    if normalizers is None:
        normalizers = (
            out_student.mean().item() * num_train,
            out_teacher.mean().item() * num_train,
        )

    def contrast_loss(out: Tensor, z: float) -> Tensor:
        probs = out / z
        m = k_plus_1 - 1
        noise = m / num_train
        total = torch.zeros((), dtype=out.dtype)
        for row in probs:
            total = total + torch.log(row[0] / (row[0] + noise + 1e-7))
            for p in row[1:]:
                total = total + torch.log(noise / (p + noise + 1e-7))
        return -total / b

    loss = contrast_loss(out_student, normalizers[0]) + contrast_loss(out_teacher, normalizers[1])

    def updated(bank: Tensor, embedded: Tensor) -> Tensor:
        bank = bank.clone()
        for row, vector in zip(contrast_index[:, 0].tolist(), embedded.detach(), strict=True):
            mixed = bank[row] * momentum + vector * (1 - momentum)
            bank[row] = mixed / mixed.norm()
        return bank

    return (
        loss,
        updated(student_bank, student_embedded),
        updated(teacher_bank, teacher_embedded),
        normalizers,
    )


def ref_gather_scores(anchors: Tensor, bank: Tensor, contrast_index: Tensor) -> Tensor:
    """Gather the (B, K+1, D) bank rows first, then batch-multiply with the anchors (RepDistiller)."""
    b, k_plus_1 = contrast_index.shape
    rows = torch.index_select(bank, 0, contrast_index.reshape(-1)).reshape(b, k_plus_1, -1)
    return torch.bmm(rows, anchors[:, :, None])[:, :, 0]


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
    expected = gated_reference(
        selected,
        batch,
        lambda sel: reference(reference_student[sel], teacher[sel]),
        min_selected=2,
    )
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-14)
    if len(selected) < 2:
        assert value.item() == 0.0
        assert torch.equal(student.grad, torch.zeros_like(student))
        return
    expected.backward()
    torch.testing.assert_close(student.grad, reference_student.grad, rtol=1e-8, atol=1e-12)
