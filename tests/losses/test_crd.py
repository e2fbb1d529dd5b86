"""CRD: golden values, per-sample gating against a RepDistiller-style sub-batch step, class-exclusive
negatives, memory updates restricted to the selected rows, and exact resume from ``state_dict``."""

import copy
import io
import math

import pytest
import torch

from sakd.errors import SakdError
from sakd.losses.crd import contrast_scores

from ._helpers import (
    MASKS,
    PATTERN_B,
    build,
    context,
    pooled_spot,
    weight_column,
)
from ._reference import (
    ref_crd_step,
    ref_embed_unit,
    ref_gather_scores,
)

NUM_TRAIN = 200
NEGATIVES = 32
LABELS = torch.randperm(NUM_TRAIN, generator=torch.Generator().manual_seed(0)) % 7


def _crd(**params):
    crd = build(
        "crd",
        pooled_spot(6),
        pooled_spot(8),
        num_train=NUM_TRAIN,
        dtype=torch.float64,
        feat_dim=5,
        num_negatives=NEGATIVES,
        train_labels=LABELS,
        **params,
    )
    return crd


def _inputs(seed: int, batch: int = 6):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, 6, generator=generator, dtype=torch.float64)
    teacher = torch.randn(batch, 8, generator=generator, dtype=torch.float64)
    index = torch.randperm(NUM_TRAIN, generator=generator)[:batch]
    return student, teacher, index


def test_declares_the_published_setup():
    crd = build("crd", pooled_spot(6), pooled_spot(8), num_train=50, dtype=torch.float64)
    params = crd.params
    assert crd.spot_role == "pooled"
    assert (params.feat_dim, params.num_negatives) == (128, 16384)
    assert (params.temperature, params.momentum) == (0.07, 0.5)
    bound = 1 / math.sqrt(128 / 3)
    for bank in (crd.student_memory, crd.teacher_memory):
        assert bank.shape == (50, 128)
        assert bank.abs().max() <= bound
    assert crd.normalizers.tolist() == [-1.0, -1.0]
    keys = set(crd.state_dict())
    assert {"student_memory", "teacher_memory", "normalizers", "_extra_state"} <= keys
    assert "train_labels" not in keys


def _golden_crd():
    crd = build(
        "crd",
        pooled_spot(4),
        pooled_spot(5),
        num_train=12,
        dtype=torch.float64,
        feat_dim=3,
        num_negatives=4,
        train_labels=torch.arange(12) % 3,
    )
    PATTERN_B.fill(crd)
    with torch.no_grad():
        crd.student_memory.copy_(PATTERN_B.tensor((12, 3), 0.6, 0.5))
        crd.teacher_memory.copy_(PATTERN_B.tensor((12, 3), 2.2, 0.5))
    return crd


GOLDEN_INDEX = torch.tensor([0, 4, 8, 1])
GOLDEN_NEGATIVES = torch.tensor([[1, 2, 5, 7], [0, 2, 3, 11], [1, 3, 4, 6], [0, 2, 3, 5]])


def test_golden_value_full_and_masked(monkeypatch):
    student = PATTERN_B.tensor((4, 4), 0.8)
    teacher = PATTERN_B.tensor((4, 5), 1.4)
    crd = _golden_crd()
    monkeypatch.setattr(crd, "sample_negatives", lambda index: GOLDEN_NEGATIVES)
    full = crd(
        [student], [teacher], torch.ones(4, 1, dtype=torch.float64), context(4, GOLDEN_INDEX)
    )

    fresh = _golden_crd()
    reference, *_, normalizers = ref_crd_step(
        ref_embed_unit(student, fresh.student_embed.linear),
        ref_embed_unit(teacher, fresh.teacher_embed.linear),
        torch.cat([GOLDEN_INDEX[:, None], GOLDEN_NEGATIVES], 1),
        fresh.student_memory,
        fresh.teacher_memory,
        None,
        0.07,
        0.5,
    )
    assert full.item() == pytest.approx(reference.item(), rel=1e-10)
    assert full.item() == pytest.approx(14.439448581074586, rel=1e-9)
    assert crd.normalizers.tolist() == pytest.approx(list(normalizers), rel=1e-10)
    assert crd.normalizers.tolist() == pytest.approx(
        [4568.102996917642, 11704.344190231013], rel=1e-9
    )

    masked_crd = _golden_crd()
    monkeypatch.setattr(masked_crd, "sample_negatives", lambda index: GOLDEN_NEGATIVES)
    masked = masked_crd([student], [teacher], weight_column([1, 3], 4), context(4, GOLDEN_INDEX))
    assert masked.item() == pytest.approx(10.531112434444724, rel=1e-9)


@pytest.mark.parametrize("case", sorted(MASKS))
def test_mask_equals_reference_step_on_selected_sub_batch(case):
    selected = MASKS[case]
    crd = _crd()
    twin = copy.deepcopy(crd)
    student, teacher, index = _inputs(5)
    negatives = twin.sample_negatives(index)
    student.requires_grad_(True)

    value = crd([student], [teacher], weight_column(selected), context(6, index))
    value.backward()

    if not selected:
        assert value.item() == 0.0
        assert torch.equal(student.grad, torch.zeros_like(student))
        assert torch.equal(crd.student_memory, twin.student_memory)
        assert torch.equal(crd.teacher_memory, twin.teacher_memory)
        assert crd.normalizers.tolist() == [-1.0, -1.0]
        return

    reference_student = student.detach().clone().requires_grad_(True)
    loss, student_bank, teacher_bank, normalizers = ref_crd_step(
        ref_embed_unit(reference_student[selected], twin.student_embed.linear),
        ref_embed_unit(teacher[selected], twin.teacher_embed.linear),
        torch.cat([index[selected, None], negatives[selected]], 1),
        twin.student_memory,
        twin.teacher_memory,
        None,
        0.07,
        0.5,
    )
    expected = loss * len(selected) / 6
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-12)
    expected.backward()
    torch.testing.assert_close(student.grad, reference_student.grad, rtol=1e-8, atol=1e-12)
    for ours, theirs in zip(crd.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(crd.student_memory, student_bank, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(crd.teacher_memory, teacher_bank, rtol=1e-12, atol=1e-14)
    assert crd.normalizers.tolist() == pytest.approx(list(normalizers), rel=1e-10)


def test_memory_update_touches_exactly_the_selected_rows():
    crd = _crd()
    before_student, before_teacher = crd.student_memory.clone(), crd.teacher_memory.clone()
    student, teacher, index = _inputs(6)
    crd([student], [teacher], weight_column([0, 2, 5]), context(6, index))
    expected_rows = sorted(index[[0, 2, 5]].tolist())
    for before, after in (
        (before_student, crd.student_memory),
        (before_teacher, crd.teacher_memory),
    ):
        changed = (before != after).any(1).nonzero().flatten().tolist()
        assert changed == expected_rows
        norms = after[expected_rows].norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms))


def test_normalizers_are_estimated_once_from_the_first_selected_batch():
    crd = _crd()
    student, teacher, index = _inputs(7)
    crd([student], [teacher], weight_column([]), context(6, index))
    assert crd.normalizers.tolist() == [-1.0, -1.0]
    crd([student], [teacher], weight_column([1, 2]), context(6, index))
    first = crd.normalizers.clone()
    assert (first > 0).all()
    other_student, other_teacher, other_index = _inputs(8)
    crd(
        [other_student],
        [other_teacher],
        torch.ones(6, 1, dtype=torch.float64),
        context(6, other_index),
    )
    assert torch.equal(crd.normalizers, first)


def test_negatives_never_share_the_anchor_class_and_are_uniform():
    crd = _crd()
    index = torch.arange(NUM_TRAIN)
    negatives = crd.sample_negatives(index)
    assert negatives.shape == (NUM_TRAIN, NEGATIVES)
    assert negatives.min() >= 0 and negatives.max() < NUM_TRAIN
    assert (LABELS[negatives] != LABELS[index][:, None]).all()

    anchors = (LABELS == 3).nonzero().flatten()
    draws = torch.cat([crd.sample_negatives(anchors) for _ in range(150)]).flatten()
    counts = torch.bincount(draws, minlength=NUM_TRAIN).double()
    others = LABELS != 3
    assert counts[~others].sum() == 0
    expected = draws.numel() / others.sum().item()
    assert counts[others].min() > 0.8 * expected
    assert counts[others].max() < 1.2 * expected


def test_matmul_then_gather_equals_gather_then_bmm():
    generator = torch.Generator().manual_seed(9)
    anchors = torch.randn(5, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    bank = torch.randn(50, 7, generator=generator, dtype=torch.float64)
    contrast_index = torch.randint(50, (5, 9), generator=generator)
    upstream = torch.randn(5, 9, generator=generator, dtype=torch.float64)

    ours = contrast_scores(anchors, bank, contrast_index)
    (grad_ours,) = torch.autograd.grad((ours * upstream).sum(), anchors)
    theirs = ref_gather_scores(anchors, bank, contrast_index)
    (grad_theirs,) = torch.autograd.grad((theirs * upstream).sum(), anchors)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-12, atol=1e-14)


def _step(crd, seed):
    student, teacher, index = _inputs(seed)
    weights = weight_column([0, 1, 3, 4])
    return crd([student], [teacher], weights, context(6, index))


@pytest.mark.parametrize("steps_before_save", [0, 2])
def test_state_dict_round_trip_resumes_exactly(steps_before_save):
    original = _crd()
    for seed in range(steps_before_save):
        _step(original, 20 + seed)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)

    resumed = _crd()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for seed in (40, 41):
        assert torch.equal(_step(original, seed), _step(resumed, seed))
    assert torch.equal(original.student_memory, resumed.student_memory)
    assert torch.equal(original.teacher_memory, resumed.teacher_memory)
    assert torch.equal(original.normalizers, resumed.normalizers)
    index = torch.arange(10)
    assert torch.equal(original.sample_negatives(index), resumed.sample_negatives(index))


def test_soft_weights_scale_each_sample_term():
    crd = _crd()
    half = copy.deepcopy(crd)
    student, teacher, index = _inputs(11)
    full = crd([student], [teacher], torch.ones(6, 1, dtype=torch.float64), context(6, index))
    halved = half(
        [student], [teacher], torch.full((6, 1), 0.5, dtype=torch.float64), context(6, index)
    )
    assert halved.item() == pytest.approx(full.item() / 2, rel=1e-12)
    assert torch.equal(crd.student_memory, half.student_memory)


@pytest.mark.fault("api")
def test_user_errors_are_reported():
    with pytest.raises(SakdError, match="at least two classes"):
        _crd_labelled(torch.zeros(NUM_TRAIN, dtype=torch.long))
    with pytest.raises(SakdError, match="negative class labels"):
        _crd_labelled(LABELS - 1)
    crd = _crd_labelled(LABELS)
    student, teacher, index = _inputs(12)
    with pytest.raises(ValueError, match="ctx.index"):
        crd([student], [teacher], torch.ones(6, 1, dtype=torch.float64), context(6))


def _crd_labelled(labels):
    return build(
        "crd",
        pooled_spot(6),
        pooled_spot(8),
        num_train=NUM_TRAIN,
        dtype=torch.float64,
        num_negatives=4,
        train_labels=labels,
    )
