"""AT: golden value, spatial matching, per-sample gating, real model pairs."""

import pytest
import torch

from ._helpers import (
    MASK_CASES,
    PAIRS,
    SMALL_STUDENT,
    SMALL_TEACHER,
    build,
    check_gated_equals_subbatch,
    context,
    exercise_on_pair,
    golden_setup,
    random_feats,
)
from ._reference import (
    ref_at,
)


def test_declares_the_published_setup():
    at = build("at", SMALL_STUDENT, SMALL_TEACHER)
    assert at.spot_role == "stages"
    assert at.params.p == 2.0
    assert at.num_spots == 3
    assert list(at.parameters()) == []


def test_golden_value():
    """The spots pool in both directions: student 8×8 -> 4×4 and teacher 4×4 -> 2×2."""
    at, student, teacher = golden_setup("at", SMALL_STUDENT, SMALL_TEACHER)
    value = at(student, teacher, torch.ones(4, 3, dtype=torch.float64), context(torch.zeros(4)))
    reference = sum(ref_at(s, t) for s, t in zip(student, teacher, strict=True))
    assert value.item() == pytest.approx(reference.item(), rel=1e-10)
    assert value.item() == pytest.approx(0.1567037964909601, rel=1e-9)


def test_identical_maps_give_zero_and_scaled_maps_too():
    """Attention maps are L2-normalised: a positive rescaling of the student changes nothing."""
    at = build("at", SMALL_STUDENT, SMALL_STUDENT)
    feats = random_feats(at.student_spots, 3, torch.Generator().manual_seed(1))
    ctx, weights = context(torch.zeros(3)), torch.ones(3, 3)
    assert at(feats, feats, weights, ctx).item() == pytest.approx(0.0, abs=1e-12)
    assert at([3 * f for f in feats], feats, weights, ctx).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("case", MASK_CASES)
def test_mask_equals_reference_on_selected_sub_batch(case):
    check_gated_equals_subbatch(
        "at", case, 40, lambda at, s, t: lambda k, sel: ref_at(s[k][sel], t[k][sel])
    )


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_works_on_model_pairs(pair):
    assert exercise_on_pair("at", *PAIRS[pair]) > 0


def test_half_precision_maps_give_a_float32_loss():
    at = build("at", SMALL_STUDENT, SMALL_TEACHER)
    generator = torch.Generator().manual_seed(5)
    student = random_feats(at.student_spots, 4, generator)
    teacher = random_feats(at.teacher_spots, 4, generator)
    weights, ctx = torch.ones(4, 3), context(torch.zeros(4))
    full = at(student, teacher, weights, ctx)
    half = at([f.bfloat16() for f in student], [f.bfloat16() for f in teacher], weights, ctx)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=0.05)
