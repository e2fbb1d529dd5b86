"""KD: golden values against an independent formula, per-sample gating, pairs of real shapes."""

import pytest
import torch

from ._helpers import (
    MASK_CASES,
    PAIRS,
    PATTERN_A,
    assert_gated_grads,
    build,
    context,
    mask_matrix,
    subbatch_sum,
)
from ._reference import (
    ref_kd,
)


def _kd(temperature: float = 4.0):
    return build("kd", [], [], temperature=temperature)


def test_declares_the_published_setup():
    kd = _kd()
    assert kd.spot_role == "logits"
    assert kd.params.temperature == 4.0
    assert kd.num_spots == 1
    assert kd.pretrain_epochs == 0


def test_golden_value_full_and_masked():
    student = PATTERN_A.tensor((4, 5), 0.2, 3.0)
    teacher = PATTERN_A.tensor((4, 5), 1.3, 3.0)
    labels = torch.zeros(4, dtype=torch.long)
    kd = _kd()
    full = kd([student], [teacher], torch.ones(4, 1, dtype=torch.float64), context(labels))
    assert full.item() == pytest.approx(ref_kd(student, teacher, 4.0).item(), rel=1e-12)
    assert full.item() == pytest.approx(2.6743912347416297, rel=1e-10)

    weights = torch.tensor([[1.0], [0.0], [1.0], [0.0]], dtype=torch.float64)
    masked = kd([student], [teacher], weights, context(labels))
    assert masked.item() == pytest.approx(1.5293971046716002, rel=1e-10)


@pytest.mark.parametrize("case", MASK_CASES)
def test_mask_equals_reference_on_selected_sub_batch(case):
    generator = torch.Generator().manual_seed(10 + case)
    student = torch.randn(6, 7, generator=generator, requires_grad=True)
    teacher = torch.randn(6, 7, generator=generator)
    weights = mask_matrix(case, 1)
    value = _kd()([student], [teacher], weights, context(torch.zeros(6, dtype=torch.long)))

    expected = subbatch_sum(weights, lambda k, sel: ref_kd(student[sel], teacher[sel], 4.0))
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-7)
    value.backward()
    assert_gated_grads([student], all_zero=not weights.any())
    if not weights.any():
        assert value.item() == 0.0


def test_soft_weights_are_per_sample_weights():
    generator = torch.Generator().manual_seed(3)
    student = torch.randn(5, 4, generator=generator)
    teacher = torch.randn(5, 4, generator=generator)
    soft = torch.tensor([0.1, 0.9, 0.0, 0.5, 1.0])
    kd, ctx = _kd(), context(torch.zeros(5, dtype=torch.long))
    one_hot_values = [kd([student], [teacher], torch.eye(5)[:, i : i + 1], ctx) for i in range(5)]
    expected = sum(w * v for w, v in zip(soft.tolist(), one_hot_values, strict=True))
    torch.testing.assert_close(kd([student], [teacher], soft[:, None], ctx), expected)


def test_no_gradient_reaches_the_teacher():
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4, requires_grad=True)
    _kd()([student], [teacher], torch.ones(3, 1), context(torch.zeros(3))).backward()
    assert teacher.grad is None and student.grad is not None


@pytest.mark.fault("api")
def test_rejects_weights_of_the_wrong_shape():
    with pytest.raises(ValueError, match="weights must have shape"):
        _kd()([torch.randn(3, 4)], [torch.randn(3, 4)], torch.ones(3, 2), context(torch.zeros(3)))


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_works_on_model_pairs(pair):
    student_spots, teacher_spots = PAIRS[pair]
    kd = build("kd", student_spots, teacher_spots)
    student = torch.randn(4, 100, requires_grad=True)
    value = kd(
        [student],
        [torch.randn(4, 100)],
        torch.tensor([[1.0], [0.0], [1.0], [1.0]]),
        context(torch.zeros(4)),
    )
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(student.grad).all()
