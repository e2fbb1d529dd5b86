"""RKD: golden values against an independent formula; distances and angles among the selected only."""

import pytest
import torch

from ._helpers import (
    MASKS,
    PATTERN_B,
    build,
    check_relational_mask,
    context,
    pooled_spot,
    weight_column,
)
from ._reference import (
    ref_rkd,
)


def _rkd(**params):
    return build("rkd", pooled_spot(6), pooled_spot(8), dtype=torch.float64, **params)


def test_declares_the_published_setup():
    rkd = _rkd()
    assert rkd.spot_role == "pooled"
    assert (rkd.params.distance_weight, rkd.params.angle_weight) == (25.0, 50.0)
    assert list(rkd.parameters()) == []


def test_golden_value_full_and_masked():
    student = PATTERN_B.tensor((5, 6), 0.3)
    teacher = PATTERN_B.tensor((5, 8), 1.7, 2.0)
    rkd = _rkd()
    full = rkd([student], [teacher], torch.ones(5, 1, dtype=torch.float64), context(5))
    assert full.item() == pytest.approx(ref_rkd(student, teacher).item(), rel=1e-10)
    assert full.item() == pytest.approx(6.749330442448171, rel=1e-9)

    masked = rkd([student], [teacher], weight_column([1, 2, 4], 5), context(5))
    assert masked.item() == pytest.approx(3.0354005918786795, rel=1e-9)


def test_term_weights_are_applied():
    student = PATTERN_B.tensor((5, 6), 0.3)
    teacher = PATTERN_B.tensor((5, 8), 1.7, 2.0)
    weights = torch.ones(5, 1, dtype=torch.float64)
    distance_only = _rkd(angle_weight=0.0)([student], [teacher], weights, context(5))
    angle_only = _rkd(distance_weight=0.0)([student], [teacher], weights, context(5))
    assert distance_only.item() == pytest.approx(
        ref_rkd(student, teacher, 25.0, 0.0).item(), rel=1e-10
    )
    assert angle_only.item() == pytest.approx(
        ref_rkd(student, teacher, 0.0, 50.0).item(), rel=1e-10
    )


@pytest.mark.parametrize("case", sorted(MASKS))
def test_mask_equals_reference_on_selected_sub_batch(case):
    generator = torch.Generator().manual_seed(3)
    student = torch.randn(6, 6, generator=generator, dtype=torch.float64)
    teacher = torch.randn(6, 8, generator=generator, dtype=torch.float64)
    check_relational_mask(_rkd(), student, teacher, MASKS[case], ref_rkd)


def test_one_selected_sample_is_zero_not_nan():
    """RepDistiller averages distances over an empty set here (NaN); the gate gives exactly 0."""
    student = PATTERN_B.tensor((4, 6), 0.3).requires_grad_(True)
    value = _rkd()([student], [PATTERN_B.tensor((4, 8), 0.9)], weight_column([2], 4), context(4))
    value.backward()
    assert value.item() == 0.0
    assert torch.equal(student.grad, torch.zeros_like(student))
