"""CC: golden values against an independent formula; consecutive pairs among the selected samples."""

import pytest
import torch

from ._helpers import (
    MASKS,
    PATTERN_B,
    build,
    context,
    pooled_spot,
    subbatch_sum,
    weight_column,
)
from ._reference import (
    ref_cc,
    ref_linear,
)


def _cc(**params):
    cc = build("cc", pooled_spot(6), pooled_spot(8), dtype=torch.float64, feat_dim=4, **params)
    PATTERN_B.fill(cc)
    return cc


def test_declares_the_published_setup():
    cc = build("cc", pooled_spot(6), pooled_spot(8), dtype=torch.float64)
    assert cc.spot_role == "pooled"
    assert cc.params.feat_dim == 128
    assert cc.params.train_teacher_embed is True
    assert cc.student_embeds[0].linear.weight.shape == (128, 6)
    assert cc.teacher_embeds[0].linear.weight.shape == (128, 8)


def test_golden_value_full_and_masked():
    student = PATTERN_B.tensor((5, 6), 0.4)
    teacher = PATTERN_B.tensor((5, 8), 1.3)
    cc = _cc()
    full = cc([student], [teacher], torch.ones(5, 1, dtype=torch.float64), context(5))
    embedded_s = ref_linear(student, cc.student_embeds[0].linear)
    embedded_t = ref_linear(teacher, cc.teacher_embeds[0].linear)
    assert full.item() == pytest.approx(ref_cc(embedded_s, embedded_t).item(), rel=1e-10)
    assert full.item() == pytest.approx(4.855129408650786, rel=1e-9)

    masked = cc([student], [teacher], weight_column([1, 2, 4], 5), context(5))
    assert masked.item() == pytest.approx(2.8470365431429028, rel=1e-9)


@pytest.mark.parametrize("case", sorted(MASKS))
def test_mask_equals_reference_on_selected_sub_batch(case):
    selected = MASKS[case]
    generator = torch.Generator().manual_seed(4)
    student = torch.randn(6, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(6, 8, generator=generator, dtype=torch.float64)
    cc = _cc()
    reference_cc = _cc()
    value = cc([student], [teacher], weight_column(selected), context(6))
    value.backward()

    reference_student = student.detach().clone().requires_grad_(True)

    def reference(sel):
        embedded_s = ref_linear(reference_student[sel], reference_cc.student_embeds[0].linear)
        embedded_t = ref_linear(teacher[sel], reference_cc.teacher_embeds[0].linear)
        return ref_cc(embedded_s, embedded_t)

    expected = subbatch_sum(weight_column(selected), lambda _, sel: reference(sel), min_selected=2)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-14)
    if len(selected) < 2:
        assert value.item() == 0.0
        assert torch.equal(student.grad, torch.zeros_like(student))
        assert torch.isfinite(cc.student_embeds[0].linear.weight.grad).all()
        return
    expected.backward()
    torch.testing.assert_close(student.grad, reference_student.grad, rtol=1e-8, atol=1e-12)
    for ours, theirs in zip(cc.parameters(), reference_cc.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-8, atol=1e-12)


def test_pairs_follow_batch_order_among_selected():
    """Selecting rows 0, 2, 3, 5 pairs (0, 2), (2, 3), (3, 5): never an unselected row."""
    student = PATTERN_B.tensor((6, 6), 0.5)
    teacher = PATTERN_B.tensor((6, 8), 1.9)
    cc = _cc()
    value = cc([student], [teacher], weight_column([0, 2, 3, 5]), context(6))
    delta = (
        ref_linear(student, cc.student_embeds[0].linear)
        - ref_linear(teacher, cc.teacher_embeds[0].linear)
    ).abs()
    pairs = [(0, 2), (2, 3), (3, 5)]
    expected = sum(torch.dot(delta[i], delta[j]) for i, j in pairs) / len(pairs) * 4 / 6
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)


def test_teacher_embedding_can_be_frozen():
    student = PATTERN_B.tensor((5, 6), 0.4)
    teacher = PATTERN_B.tensor((5, 8), 1.3)
    frozen = _cc(train_teacher_embed=False)
    assert not any(p.requires_grad for p in frozen.teacher_embeds.parameters())
    frozen([student], [teacher], torch.ones(5, 1, dtype=torch.float64), context(5)).backward()
    assert all(p.grad is None for p in frozen.teacher_embeds.parameters())
    assert all(p.grad is not None for p in frozen.student_embeds.parameters())

    trained = _cc()
    trained([student], [teacher], torch.ones(5, 1, dtype=torch.float64), context(5)).backward()
    assert all(p.grad is not None for p in trained.teacher_embeds.parameters())
