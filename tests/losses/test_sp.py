"""SP: golden values against an independent formula; relations among the selected samples only."""

import pytest
import torch

from ._helpers import (
    MASKS,
    PATTERN_B,
    build,
    check_relational_mask,
    context,
    map_spot,
    weight_column,
)
from ._reference import (
    ref_sp,
)


def _sp():
    return build("sp", map_spot((3, 2, 2)), map_spot((5, 2, 2)), dtype=torch.float64)


def test_declares_the_published_setup():
    sp = _sp()
    assert sp.spot_role == "last_stage"
    assert sp.num_spots == 1
    assert list(sp.parameters()) == []


def test_golden_value_full_and_masked():
    student = PATTERN_B.tensor((4, 3, 2, 2), 0.1)
    teacher = PATTERN_B.tensor((4, 5, 2, 2), 0.9)
    sp = _sp()
    full = sp([student], [teacher], torch.ones(4, 1, dtype=torch.float64), context(4))
    assert full.item() == pytest.approx(ref_sp(student, teacher).item(), rel=1e-10)
    assert full.item() == pytest.approx(0.08662751135304646, rel=1e-9)

    weights = torch.tensor([[1.0], [0.0], [1.0], [1.0]], dtype=torch.float64)
    masked = sp([student], [teacher], weights, context(4))
    assert masked.item() == pytest.approx(0.055560862532017696, rel=1e-9)


@pytest.mark.parametrize("case", sorted(MASKS))
def test_mask_equals_reference_on_selected_sub_batch(case):
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(6, 3, 2, 2, generator=generator, dtype=torch.float64)
    teacher = torch.randn(6, 5, 2, 2, generator=generator, dtype=torch.float64)
    check_relational_mask(_sp(), student, teacher, MASKS[case], ref_sp)


def test_zero_features_stay_finite():
    student = torch.zeros(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    teacher = PATTERN_B.tensor((4, 5, 2, 2), 0.5)
    value = _sp()([student], [teacher], weight_column([0, 2], 4), context(4))
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(student.grad).all()


@pytest.mark.fault("api")
def test_rejects_weights_of_the_wrong_shape():
    student = PATTERN_B.tensor((4, 3, 2, 2), 0.1)
    with pytest.raises(ValueError, match="weights must have shape"):
        _sp()([student], [PATTERN_B.tensor((4, 5, 2, 2), 0.2)], torch.ones(4, 2), context(4))


@pytest.mark.parametrize("selected", [[], [2]])
def test_fewer_than_two_selected_is_zero_even_with_huge_gram_entries(selected):
    # Gram entries ~1e8 (> 1.8e7): dividing an unselected row by the 1e-12 norm floor overflowed
    # float32 to inf, and the 0 gate times inf gave NaN (the authors' code returns 0 here).
    generator = torch.Generator().manual_seed(0)
    student = (3e3 * torch.randn(4, 3, 2, 2, generator=generator)).requires_grad_()
    teacher = 3e3 * torch.randn(4, 5, 2, 2, generator=generator)
    weights = torch.zeros(4, 1)
    weights[selected] = 1.0
    value = _sp()([student], [teacher], weights, context(4))
    value.backward()
    assert value.item() == 0.0
    assert torch.equal(student.grad, torch.zeros_like(student))
