"""DKD: golden values against an independent formula, warm-up, per-sample gating, model pairs."""

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
    ref_dkd,
)


def test_declares_the_published_setup():
    dkd = build("dkd", [], [])
    assert dkd.spot_role == "logits"
    assert dkd.params.model_dump() == {
        "alpha": 1.0,
        "beta": 8.0,
        "temperature": 4.0,
        "warmup_epochs": 20,
        "logit_standardization": False,
    }


def test_golden_value_and_warm_up():
    student = PATTERN_A.tensor((4, 6), 0.4, 3.0)
    teacher = PATTERN_A.tensor((4, 6), 2.1, 3.0)
    labels = torch.tensor([0, 3, 5, 2])
    dkd = build("dkd", [], [])
    ones = torch.ones(4, 1, dtype=torch.float64)
    full = dkd([student], [teacher], ones, context(labels, epoch=100))
    reference = ref_dkd(student, teacher, labels, 1.0, 8.0, 4.0)
    assert full.item() == pytest.approx(reference.item(), rel=1e-10)
    assert full.item() == pytest.approx(35.38444165339787, rel=1e-10)

    # linear warm-up over 20 epochs; ctx.epoch is 0-based (mdistiller's epoch 5 is our 4)
    warming = dkd([student], [teacher], ones, context(labels, epoch=4))
    assert warming.item() == pytest.approx(0.25 * 35.38444165339787, rel=1e-10)
    first = dkd([student], [teacher], ones, context(labels, epoch=0))
    assert first.item() == pytest.approx(35.38444165339787 / 20, rel=1e-10)
    for epoch in (19, 20, 239):
        late = dkd([student], [teacher], ones, context(labels, epoch=epoch))
        assert late.item() == pytest.approx(35.38444165339787, rel=1e-10)
    assert (
        build("dkd", [], [], warmup_epochs=0)([student], [teacher], ones, context(labels, epoch=0))
        == full
    )


def test_alpha_and_beta_weight_the_two_terms_separately():
    """α scales TCKD alone, β scales NCKD alone, and each term matches the reference."""
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(5, 8, generator=generator, dtype=torch.float64)
    teacher = torch.randn(5, 8, generator=generator, dtype=torch.float64)
    labels = torch.tensor([1, 0, 7, 3, 3])
    ones, ctx = torch.ones(5, 1, dtype=torch.float64), context(labels)
    tckd = build("dkd", [], [], alpha=1.0, beta=0.0)([student], [teacher], ones, ctx)
    nckd = build("dkd", [], [], alpha=0.0, beta=1.0)([student], [teacher], ones, ctx)
    both = build("dkd", [], [], alpha=2.0, beta=3.0)([student], [teacher], ones, ctx)
    torch.testing.assert_close(both, 2 * tckd + 3 * nckd)
    torch.testing.assert_close(tckd, ref_dkd(student, teacher, labels, 1.0, 0.0, 4.0))
    torch.testing.assert_close(nckd, ref_dkd(student, teacher, labels, 0.0, 1.0, 4.0))


@pytest.mark.parametrize("case", MASK_CASES)
def test_mask_equals_reference_on_selected_sub_batch(case):
    generator = torch.Generator().manual_seed(20 + case)
    student = torch.randn(6, 7, generator=generator, requires_grad=True)
    teacher = torch.randn(6, 7, generator=generator)
    labels = torch.randint(0, 7, (6,), generator=generator)
    weights = mask_matrix(case, 1)
    value = build("dkd", [], [])([student], [teacher], weights, context(labels))

    expected = subbatch_sum(
        weights, lambda k, sel: ref_dkd(student[sel], teacher[sel], labels[sel], 1.0, 8.0, 4.0)
    )
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-6)
    value.backward()
    assert_gated_grads([student], all_zero=not weights.any())
    if not weights.any():
        assert value.item() == 0.0


def test_no_gradient_reaches_the_teacher():
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4, requires_grad=True)
    dkd = build("dkd", [], [])
    dkd([student], [teacher], torch.ones(3, 1), context(torch.tensor([0, 1, 2]))).backward()
    assert teacher.grad is None and student.grad is not None


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_works_on_model_pairs(pair):
    student_spots, teacher_spots = PAIRS[pair]
    dkd = build("dkd", student_spots, teacher_spots)
    student = torch.randn(4, 100, requires_grad=True)
    labels = torch.tensor([3, 99, 0, 42])
    weights = torch.tensor([[1.0], [0.0], [1.0], [1.0]])
    value = dkd([student], [torch.randn(4, 100)], weights, context(labels))
    value.backward()
    assert value > 0 and torch.isfinite(student.grad).all()
