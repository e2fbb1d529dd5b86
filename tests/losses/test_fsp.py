"""FSP: flow matrices, init (pre-training) stage, optional main-stage term, gating, model pairs."""

import pytest
import torch
from torch import nn

from sakd.errors import SakdError

from ._helpers import (
    FSP_STUDENT,
    FSP_TEACHER,
    MASK_CASES,
    MOBILENETV2,
    RESNET8X4,
    RESNET32X4,
    VGG13,
    assert_gated_grads,
    build,
    context,
    exercise_on_pair,
    golden_setup,
    mask_matrix,
    random_feats,
    subbatch_sum,
)
from ._reference import (
    ref_fsp_terms,
)


def test_declares_the_published_setup():
    fsp = build("fsp", FSP_STUDENT, FSP_TEACHER)
    assert fsp.spot_role == "maps"
    assert [s.role for s in fsp.student_spots] == ["stem", "stage", "stage"]
    assert fsp.pretrain_trains_student and not fsp.preact
    assert fsp.pretrain_epochs == 30
    assert fsp.params.model_dump() == {
        "main_stage": False,
        "pretrain_epochs": 30,
        "pretrain_lr": 0.05,
        "pretrain_momentum": 0.9,
        "pretrain_weight_decay": 5e-4,
    }
    assert list(fsp.parameters()) == [] and fsp.pretrain_parameters() == []


@pytest.mark.fault("api")
def test_unequal_channels_are_a_user_error():
    with pytest.raises(SakdError, match="fsp needs equal channel counts"):
        build("fsp", MOBILENETV2, VGG13)


def test_main_stage_term_is_an_exact_zero_by_default():
    fsp = build("fsp", FSP_STUDENT, FSP_TEACHER)
    generator = torch.Generator().manual_seed(0)
    student = [f.requires_grad_() for f in random_feats(fsp.student_spots, 4, generator)]
    teacher = random_feats(fsp.teacher_spots, 4, generator)
    value = fsp(student, teacher, torch.ones(4, 3), context(torch.zeros(4)))
    assert value.item() == 0.0 and value.shape == () and value.grad_fn is None


def test_golden_values():
    fsp, student, teacher = golden_setup("fsp", FSP_STUDENT, FSP_TEACHER, main_stage=True)
    reference = sum(ref_fsp_terms(student, teacher))
    ctx = context(torch.zeros(4))
    value = fsp(student, teacher, torch.ones(4, 3, dtype=torch.float64), ctx)
    pretrain = fsp.pretrain_loss(student, teacher, ctx)
    for loss in (value, pretrain):
        assert loss.item() == pytest.approx(reference.item(), rel=1e-10)
        assert loss.item() == pytest.approx(0.25369869973606657, rel=1e-9)


def test_pretraining_trains_the_student_maps():
    fsp = build("fsp", FSP_STUDENT, FSP_TEACHER)
    generator = torch.Generator().manual_seed(1)
    student = [nn.Parameter(f) for f in random_feats(fsp.student_spots, 8, generator)]
    teacher = random_feats(fsp.teacher_spots, 8, generator)
    optimizer = torch.optim.SGD(student, lr=10.0, momentum=0.9)
    ctx = context(torch.zeros(8))
    losses = []
    for _ in range(20):
        loss = fsp.pretrain_loss(student, teacher, ctx)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("case", MASK_CASES)
def test_mask_equals_reference_on_selected_sub_batch(case):
    """The flow between maps k and k+1 is gated by column k+1; column 0 gates nothing."""
    fsp = build("fsp", FSP_STUDENT, FSP_TEACHER, main_stage=True)
    generator = torch.Generator().manual_seed(90 + case)
    student = [f.requires_grad_() for f in random_feats(fsp.student_spots, 6, generator)]
    teacher = random_feats(fsp.teacher_spots, 6, generator)
    weights = mask_matrix(case, 3)
    value = fsp(student, teacher, weights, context(torch.zeros(6)))

    def spot_reference(k, sel):
        if k == 0:
            return torch.zeros(())
        pair = slice(k - 1, k + 1)
        subset_s = [f[sel] for f in student[pair]]
        subset_t = [f[sel] for f in teacher[pair]]
        return ref_fsp_terms(subset_s, subset_t)[0]

    expected = subbatch_sum(weights, spot_reference)
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-7)
    value.backward()
    assert_gated_grads(student, all_zero=not weights[:, 1:].any())
    if not weights[:, 1:].any():
        assert value.item() == 0.0


@pytest.mark.parametrize(
    "pair",
    [(RESNET8X4, RESNET32X4), (FSP_STUDENT, FSP_TEACHER)],
    ids=["resnet32x4->resnet8x4", "different-resolutions"],
)
@pytest.mark.parametrize("main_stage", [False, True])
def test_works_on_model_pairs(pair, main_stage):
    value = exercise_on_pair("fsp", *pair, main_stage=main_stage)
    assert (value > 0) == main_stage
