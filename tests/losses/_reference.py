"""Straightforward re-statements of the RepDistiller / mdistiller formulas, written independently
of sakd.losses (per-sample loops, pairs and triplets, obvious ops).

Every ``ref_*`` function computes the published *batch* loss on whatever batch it is given (the
test passes the selected sub-batch and multiplies by |selected| / B itself). The shared inputs,
builders and mask checks are in ``_helpers.py``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# ----------------------------------------------------------------------------------------------
# shared pieces


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


def attention(f: Tensor, p: float) -> Tensor:
    """normalise(mean_c f^p) flattened over positions, for one (C, H, W) map (AT's map, FT's code)."""
    return unit((f**p).mean(dim=0).reshape(-1))


# ----------------------------------------------------------------------------------------------
# logit and feature-map formulas


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
        squares.append((attention(s, p) - attention(t, p)) ** 2)
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
        diffs.append((attention(s, p1) - attention(t, p1)).abs())
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
# relational and contrastive formulas


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
