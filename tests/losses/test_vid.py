"""VID: architecture, golden value, per-sample gating, real model pairs."""

import math

import pytest
import torch
from torch import nn

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
)
from ._reference import (
    ref_vid,
    vid_init_log_scale,
)


def _reference(head, student, teacher):
    convs = [head.regressor[0].weight, head.regressor[2].weight, head.regressor[4].weight]
    return ref_vid(student, teacher, convs, head.log_scale, 1e-5)


def test_declares_the_published_setup():
    vid = build("vid", SMALL_STUDENT, SMALL_TEACHER)
    assert vid.spot_role == "stages"
    assert (vid.params.init_pred_var, vid.params.eps) == (5.0, 1e-5)
    head = vid.heads[0]  # student 4 channels -> teacher 5 channels
    kinds = [type(m) for m in head.regressor]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU, nn.Conv2d]
    shapes = [tuple(head.regressor[i].weight.shape) for i in (0, 2, 4)]
    assert shapes == [(5, 4, 1, 1), (5, 5, 1, 1), (5, 5, 1, 1)]
    assert all(head.regressor[i].bias is None for i in (0, 2, 4))
    assert torch.allclose(head.log_scale, torch.full((5,), vid_init_log_scale(5.0, 1e-5)))
    initial_variance = math.log1p(math.exp(head.log_scale[0].item())) + 1e-5
    assert initial_variance == pytest.approx(5.0, rel=1e-6)


def test_golden_value():
    vid, student, teacher = golden_setup("vid", SMALL_STUDENT, SMALL_TEACHER)
    value = vid(student, teacher, torch.ones(4, 3, dtype=torch.float64), context(torch.zeros(4)))
    reference = sum(
        _reference(head, s, t) for head, s, t in zip(vid.heads, student, teacher, strict=True)
    )
    assert value.item() == pytest.approx(reference.item(), rel=1e-10)
    assert value.item() == pytest.approx(2.5595348811552747, rel=1e-9)


@pytest.mark.parametrize("case", MASK_CASES)
def test_mask_equals_reference_on_selected_sub_batch(case):
    vid, weights = check_gated_equals_subbatch(
        "vid",
        case,
        60,
        lambda vid, s, t: lambda k, sel: _reference(vid.heads[k], s[k][sel], t[k][sel]),
        lambda vid: vid.parameters(),
        atol=1e-6,
    )
    for k, head in enumerate(vid.heads):
        if not weights[:, k].any():  # an unselected spot leaves its head untouched
            assert all(torch.count_nonzero(p.grad) == 0 for p in head.parameters())


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_works_on_model_pairs(pair):
    assert torch.isfinite(exercise_on_pair("vid", *PAIRS[pair]))
