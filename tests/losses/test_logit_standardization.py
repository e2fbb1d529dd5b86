"""Logit standardisation (Sun et al., CVPR 2024) as an option of KD and DKD.

Golden values against a reference written here from the paper's formula (explicit sums, no
``torch.std`` / ``log_softmax`` / ``kl_div``), invariance to per-sample affine maps of the logits,
the masking contract (masked loss = loss on the selected sub-batch × |selected| / B, 0 when none is
selected), and parameter validation. Self-contained: only ``sakd.losses`` is imported.
"""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch import Tensor

from sakd.losses import DistillContext, DistillerSetup, get_distiller
from sakd.losses.kd import LS_EPSILON, standardize_logits

# ----------------------------------------------------------------------------------- reference


def _pattern(rows: int, cols: int, phase: float, scale: float) -> Tensor:
    t = torch.arange(rows * cols, dtype=torch.float64)
    values = torch.sin(0.61 * t + phase) + 0.5 * torch.cos(1.37 * t + 2.0 * phase)
    return (scale * values).reshape(rows, cols)


def ref_zscore(row: list[float]) -> list[float]:
    """(z_k − mean) / (1e-7 + std), std with K − 1 in the denominator (the paper's code)."""
    k = len(row)
    mean = sum(row) / k
    std = math.sqrt(sum((v - mean) ** 2 for v in row) / (k - 1))
    return [(v - mean) / (1e-7 + std) for v in row]


def ref_softmax(row: list[float], temperature: float) -> list[float]:
    top = max(row)
    exps = [math.exp((v - top) / temperature) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def ref_kl(p: list[float], q: list[float]) -> float:
    """KL(p ‖ q) = Σ p log(p / q)."""
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def ref_kd_ls(student: Tensor, teacher: Tensor, temperature: float, ls: bool = True) -> float:
    """Batch mean of T²·KL(softmax(Z(z_t)/T) ‖ softmax(Z(z_s)/T))."""
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        if ls:
            s_row, t_row = ref_zscore(s_row), ref_zscore(t_row)
        p_t, p_s = ref_softmax(t_row, temperature), ref_softmax(s_row, temperature)
        total += ref_kl(p_t, p_s) * temperature**2
    return total / student.shape[0]


def ref_dkd_ls(
    student: Tensor,
    teacher: Tensor,
    labels: Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    ls: bool = True,
) -> float:
    """Batch mean of α·TCKD + β·NCKD (× T²) on z-scored logits.

    TCKD: KL of the binary [p(target), 1 − p(target)]; NCKD: KL of the softmax over the non-target
    classes alone (written directly, not with mdistiller's −1000 offset).
    """
    total = 0.0
    for s_row, t_row, y in zip(student.tolist(), teacher.tolist(), labels.tolist(), strict=True):
        if ls:
            s_row, t_row = ref_zscore(s_row), ref_zscore(t_row)
        p_s, p_t = ref_softmax(s_row, temperature), ref_softmax(t_row, temperature)
        tckd = ref_kl([p_t[y], 1 - p_t[y]], [p_s[y], 1 - p_s[y]])
        rest_s = ref_softmax([v for i, v in enumerate(s_row) if i != y], temperature)
        rest_t = ref_softmax([v for i, v in enumerate(t_row) if i != y], temperature)
        nckd = ref_kl(rest_t, rest_s)
        total += (alpha * tckd + beta * nckd) * temperature**2
    return total / student.shape[0]


# --------------------------------------------------------------------------------------- helpers


def _build(name: str, **params):
    cls = get_distiller(name)
    return cls(DistillerSetup((), (), cls.Params(**params), 10, torch.arange(100) % 10))


def _ctx(labels: Tensor, epoch: int = 100) -> DistillContext:
    return DistillContext(labels=labels, index=torch.arange(labels.shape[0]), epoch=epoch)


MASKS = [
    [1, 1, 1, 1, 1, 1],
    [0, 0, 0, 0, 0, 0],
    [0, 0, 1, 0, 0, 0],
    [1, 0, 1, 1, 0, 1],
    [0, 1, 1, 1, 1, 0],
]

STUDENT = _pattern(4, 6, 0.4, 3.0)
TEACHER = _pattern(4, 6, 2.1, 5.0)
LABELS = torch.tensor([0, 3, 5, 2])
ONES = torch.ones(4, 1, dtype=torch.float64)


# ------------------------------------------------------------------------------ standardisation


def test_standardize_matches_the_formula_and_has_unit_sample_std():
    z = standardize_logits(STUDENT)
    for row, ref in zip(z.tolist(), [ref_zscore(r) for r in STUDENT.tolist()], strict=True):
        assert row == pytest.approx(ref, rel=1e-12, abs=1e-12)
    torch.testing.assert_close(z.mean(dim=1), torch.zeros(4, dtype=torch.float64))
    # std with K − 1 is 1 up to the epsilon: std / (eps + std)
    std = STUDENT.std(dim=1)
    torch.testing.assert_close(z.std(dim=1), std / (LS_EPSILON + std))


def test_standardize_of_constant_logits_is_zero_not_nan():
    z = standardize_logits(torch.full((2, 5), 3.0))
    assert torch.equal(z, torch.zeros(2, 5))


def test_standardize_half_precision_is_computed_in_float32():
    z = standardize_logits(STUDENT.bfloat16())
    assert z.dtype == torch.float32
    torch.testing.assert_close(z, standardize_logits(STUDENT).float(), atol=0.05, rtol=0.05)


@pytest.mark.fault("api")
def test_standardize_refuses_a_single_class():
    with pytest.raises(ValueError, match="at least 2 classes"):
        standardize_logits(torch.zeros(3, 1))


# ------------------------------------------------------------------------------------ KD + LS


def test_kd_ls_golden_value():
    kd = _build("kd", temperature=2.0, logit_standardization=True)
    value = kd([STUDENT], [TEACHER], ONES, _ctx(LABELS)).item()
    assert value == pytest.approx(ref_kd_ls(STUDENT, TEACHER, 2.0), rel=1e-10)
    assert value == pytest.approx(0.788048106084398, rel=1e-10)


def test_kd_without_ls_is_unchanged_and_differs_from_ls():
    plain = _build("kd", temperature=2.0)([STUDENT], [TEACHER], ONES, _ctx(LABELS)).item()
    assert plain == pytest.approx(ref_kd_ls(STUDENT, TEACHER, 2.0, ls=False), rel=1e-10)
    assert plain != pytest.approx(ref_kd_ls(STUDENT, TEACHER, 2.0), rel=1e-3)


@pytest.mark.parametrize("name", ["kd", "dkd"])
def test_ls_loss_ignores_per_sample_shift_and_positive_scale(name):
    """Z(a·z + b) = Z(z) for a > 0 (up to the epsilon): only the logits' relations count."""
    loss = _build(name, logit_standardization=True)
    ctx = _ctx(LABELS)
    base = loss([STUDENT], [TEACHER], ONES, ctx)
    scale = torch.tensor([[0.5], [3.0], [1.0], [7.0]], dtype=torch.float64)
    shift = torch.tensor([[-2.0], [10.0], [0.3], [-50.0]], dtype=torch.float64)
    moved = loss([scale * STUDENT + shift], [TEACHER / scale - shift], ONES, ctx)
    torch.testing.assert_close(moved, base, rtol=1e-6, atol=1e-9)
    plain = _build(name)
    assert not torch.allclose(
        plain([scale * STUDENT + shift], [TEACHER], ONES, ctx),
        plain([STUDENT], [TEACHER], ONES, ctx),
    )


# ----------------------------------------------------------------------------------- DKD + LS


def test_dkd_ls_golden_value_and_warm_up():
    dkd = _build("dkd", alpha=1.0, beta=8.0, temperature=2.0, logit_standardization=True)
    value = dkd([STUDENT], [TEACHER], ONES, _ctx(LABELS)).item()
    assert value == pytest.approx(ref_dkd_ls(STUDENT, TEACHER, LABELS, 1.0, 8.0, 2.0), rel=1e-9)
    assert value == pytest.approx(6.491391662268202, rel=1e-9)
    warming = dkd([STUDENT], [TEACHER], ONES, _ctx(LABELS, epoch=4)).item()
    assert warming == pytest.approx(0.25 * value, rel=1e-12)


def test_dkd_ls_terms_are_weighted_separately():
    ctx = _ctx(LABELS)
    tckd = _build("dkd", alpha=1.0, beta=0.0, logit_standardization=True)
    nckd = _build("dkd", alpha=0.0, beta=1.0, logit_standardization=True)
    t_value = tckd([STUDENT], [TEACHER], ONES, ctx).item()
    n_value = nckd([STUDENT], [TEACHER], ONES, ctx).item()
    assert t_value == pytest.approx(ref_dkd_ls(STUDENT, TEACHER, LABELS, 1.0, 0.0, 4.0), rel=1e-9)
    assert n_value == pytest.approx(ref_dkd_ls(STUDENT, TEACHER, LABELS, 0.0, 1.0, 4.0), rel=1e-9)


# ----------------------------------------------------------------------------- masking contract


def _subbatch(weights: Tensor, reference) -> float:
    selected = weights[:, 0] > 0.5
    count = int(selected.sum())
    return 0.0 if count == 0 else reference(selected) * count / weights.shape[0]


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("name", ["kd", "dkd"])
def test_masked_ls_loss_equals_the_selected_sub_batch(name, mask):
    generator = torch.Generator().manual_seed(7 + sum(mask))
    student = torch.randn(6, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = 4 * torch.randn(6, 7, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 7, (6,), generator=generator)
    weights = torch.tensor(mask, dtype=torch.float64)[:, None]
    params = {"temperature": 2.0, "logit_standardization": True}
    if name == "dkd":
        params.update(alpha=1.0, beta=6.0)
    value = _build(name, **params)([student], [teacher], weights, _ctx(labels))

    def reference(sel):
        s, t = student.detach()[sel], teacher[sel]
        if name == "kd":
            return ref_kd_ls(s, t, 2.0)
        return ref_dkd_ls(s, t, labels[sel], 1.0, 6.0, 2.0)

    assert value.item() == pytest.approx(_subbatch(weights, reference), rel=1e-9, abs=1e-12)
    value.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    unselected = weights[:, 0] == 0
    assert torch.count_nonzero(student.grad[unselected]) == 0
    if not any(mask):
        assert value.item() == 0.0


@pytest.mark.parametrize("name", ["kd", "dkd"])
def test_ls_soft_weights_are_per_sample_weights(name):
    loss, ctx = _build(name, logit_standardization=True), _ctx(LABELS)
    soft = torch.tensor([0.1, 0.9, 0.0, 0.5], dtype=torch.float64)
    one_hot = [
        loss([STUDENT], [TEACHER], torch.eye(4, dtype=torch.float64)[:, i : i + 1], ctx)
        for i in range(4)
    ]
    expected = sum(w * v for w, v in zip(soft.tolist(), one_hot, strict=True))
    torch.testing.assert_close(loss([STUDENT], [TEACHER], soft[:, None], ctx), expected)


@pytest.mark.parametrize("name", ["kd", "dkd"])
def test_ls_sends_no_gradient_to_the_teacher(name):
    student = torch.randn(3, 5, requires_grad=True)
    teacher = torch.randn(3, 5, requires_grad=True)
    loss = _build(name, logit_standardization=True)
    loss([student], [teacher], torch.ones(3, 1), _ctx(torch.tensor([0, 1, 4]))).backward()
    assert teacher.grad is None and torch.isfinite(student.grad).all()


# ---------------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("name", ["kd", "dkd"])
def test_ls_is_off_by_default(name):
    assert get_distiller(name).Params().logit_standardization is False


@pytest.mark.fault("config")
@pytest.mark.parametrize("name", ["kd", "dkd"])
@pytest.mark.parametrize(
    "bad",
    [
        {"logit_standardization": "maybe"},
        {"logit_standardization": 1},
        {"temperature": 0.0},
        {"temperature": -2.0},
        {"logit_stand": True},
    ],
)
def test_bad_ls_params_are_refused(name, bad):
    with pytest.raises(ValidationError):
        get_distiller(name).Params(**bad)


@pytest.mark.fault("config")
@pytest.mark.parametrize("bad", [{"alpha": -1.0}, {"beta": -0.5}, {"warmup_epochs": -1}])
def test_bad_dkd_weights_are_refused(bad):
    with pytest.raises(ValidationError):
        get_distiller("dkd").Params(**bad)
