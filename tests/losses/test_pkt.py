"""PKT: golden values against an independent formula; similarities among the selected samples only."""

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
    ref_pkt,
)


def _pkt():
    return build("pkt", pooled_spot(6), pooled_spot(8), dtype=torch.float64)


def test_declares_the_published_setup():
    pkt = _pkt()
    assert pkt.spot_role == "pooled"
    assert pkt.params.eps == 1e-7
    assert list(pkt.parameters()) == []


def test_golden_value_full_and_masked():
    student = PATTERN_B.tensor((5, 6), 0.2)
    teacher = PATTERN_B.tensor((5, 8), 1.1)
    pkt = _pkt()
    full = pkt([student], [teacher], torch.ones(5, 1, dtype=torch.float64), context(5))
    assert full.item() == pytest.approx(ref_pkt(student, teacher).item(), rel=1e-10)
    assert full.item() == pytest.approx(0.05008395359839111, rel=1e-9)

    masked = pkt([student], [teacher], weight_column([1, 2, 4], 5), context(5))
    assert masked.item() == pytest.approx(0.04455458397618369, rel=1e-9)


@pytest.mark.parametrize("case", sorted(MASKS))
def test_mask_equals_reference_on_selected_sub_batch(case):
    generator = torch.Generator().manual_seed(2)
    student = torch.randn(6, 6, generator=generator, dtype=torch.float64)
    teacher = torch.randn(6, 8, generator=generator, dtype=torch.float64)
    check_relational_mask(_pkt(), student, teacher, MASKS[case], ref_pkt)


def test_zero_vector_stays_finite():
    student = PATTERN_B.tensor((4, 6), 0.3)
    student[1] = 0.0
    student.requires_grad_(True)
    value = _pkt()(
        [student], [PATTERN_B.tensor((4, 8), 0.7)], weight_column([0, 1, 3], 4), context(4)
    )
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(student.grad).all()


def test_half_precision_inputs_are_computed_in_float32():
    student = PATTERN_B.tensor((4, 6), 0.3).to(torch.bfloat16)
    teacher = PATTERN_B.tensor((4, 8), 0.7).to(torch.bfloat16)
    value = _pkt().float()([student], [teacher], torch.ones(4, 1), context(4))
    assert value.dtype == torch.float32
    expected = ref_pkt(student.double(), teacher.double())
    assert value.item() == pytest.approx(expected.item(), rel=1e-4)
