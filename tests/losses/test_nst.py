"""NST: golden value, both kernel evaluation routes, per-sample gating, real model pairs."""

import pytest
import torch

from sakd.losses.nst import nst_per_sample

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
    spots,
)
from ._reference import (
    ref_nst,
)


def test_declares_the_published_setup():
    nst = build("nst", SMALL_STUDENT, SMALL_TEACHER)
    assert nst.spot_role == "stages"
    assert nst.num_spots == 3
    assert list(nst.parameters()) == []


def test_golden_value():
    nst, student, teacher = golden_setup("nst", SMALL_STUDENT, SMALL_TEACHER)
    value = nst(student, teacher, torch.ones(4, 3, dtype=torch.float64), context(torch.zeros(4)))
    reference = sum(ref_nst(s, t) for s, t in zip(student, teacher, strict=True))
    assert value.item() == pytest.approx(reference.item(), rel=1e-10)
    assert value.item() == pytest.approx(2.15648409280947, rel=1e-9)


def test_golden_value_wide_maps():
    """Many channels on few positions: the loss goes through the (H·W)² Gram matrices."""
    wide_student = spots([("stem", (8, 4, 4)), ("stage", (32, 2, 2)), ("pooled", (32,))], 4)
    wide_teacher = spots([("stem", (8, 4, 4)), ("stage", (48, 4, 4)), ("pooled", (48,))], 4)
    nst, student, teacher = golden_setup("nst", wide_student, wide_teacher)
    value = nst(student, teacher, torch.ones(4, 1, dtype=torch.float64), context(torch.zeros(4)))
    assert value.item() == pytest.approx(ref_nst(student[0], teacher[0]).item(), rel=1e-10)
    assert value.item() == pytest.approx(0.38084626257209814, rel=1e-9)


@pytest.mark.parametrize(("channels", "size"), [((5, 7), 4), ((40, 64), 2), ((64, 3), 3)])
def test_per_sample_values_match_reference(channels, size):
    generator = torch.Generator().manual_seed(sum(channels))
    student = torch.randn(3, channels[0], size, size, generator=generator, dtype=torch.float64)
    teacher = torch.randn(3, channels[1], size, size, generator=generator, dtype=torch.float64)
    per_sample = nst_per_sample(student, teacher)
    for i in range(3):
        reference = ref_nst(student[i : i + 1], teacher[i : i + 1])
        assert per_sample[i].item() == pytest.approx(reference.item(), rel=1e-10)


@pytest.mark.parametrize("case", MASK_CASES)
def test_mask_equals_reference_on_selected_sub_batch(case):
    check_gated_equals_subbatch(
        "nst", case, 50, lambda nst, s, t: lambda k, sel: ref_nst(s[k][sel], t[k][sel]), atol=1e-6
    )


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_works_on_model_pairs(pair):
    assert exercise_on_pair("nst", *PAIRS[pair]) > 0
