"""AB: connectors, layer weights, init (pre-training) stage, optional main-stage term, gating."""

import pytest
import torch
from torch import nn

from sakd.models.connectors import ConvReg

from ._helpers import (
    MASK_CASES,
    PAIRS,
    RESNET8X4,
    SMALL_STUDENT,
    SMALL_TEACHER,
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
    ref_ab,
    ref_ab_layer,
)


def test_declares_the_published_setup():
    ab = build("ab", SMALL_STUDENT, SMALL_TEACHER)
    assert ab.spot_role == "stages"
    assert ab.preact and ab.pretrain_trains_student
    assert ab.pretrain_epochs == 30
    assert ab.params.model_dump() == {
        "margin": 1.0,
        "loss_scale": 3e-3,
        "main_stage": False,
        "pretrain_epochs": 30,
        "pretrain_lr": 0.05,
        "pretrain_momentum": 0.9,
        "pretrain_weight_decay": 5e-4,
    }
    assert ab.layer_weights == [0.25, 0.5, 1.0]  # 2^(k - n + 1)
    assert build("ab", VGG13, VGG13).layer_weights == [0.125, 0.25, 0.5, 1.0]
    assert ab.pretrain_parameters() == list(ab.connectors.parameters())


def test_connectors_follow_repdistiller():
    """Identity for equal channels and height; otherwise ConvReg without its ReLU."""
    assert all(isinstance(c, nn.Identity) for c in build("ab", RESNET8X4, RESNET8X4).connectors)
    connectors = build("ab", SMALL_STUDENT, SMALL_TEACHER).connectors
    assert all(isinstance(c, ConvReg) and isinstance(c.act, nn.Identity) for c in connectors)
    kinds = [(type(c.conv).__name__, c.conv.kernel_size, c.conv.stride) for c in connectors]
    assert kinds == [
        ("Conv2d", (3, 3), (2, 2)),  # 8×8 -> 4×4
        ("Conv2d", (1, 1), (1, 1)),  # 4×4 -> 4×4
        ("ConvTranspose2d", (4, 4), (2, 2)),  # 2×2 -> 4×4
    ]


def test_main_stage_term_is_an_exact_zero_by_default():
    ab = build("ab", SMALL_STUDENT, SMALL_TEACHER).double()
    generator = torch.Generator().manual_seed(0)
    student = [f.double().requires_grad_() for f in random_feats(ab.student_spots, 4, generator)]
    teacher = [f.double() for f in random_feats(ab.teacher_spots, 4, generator)]
    value = ab(student, teacher, torch.ones(4, 3), context(torch.zeros(4)))
    assert value.item() == 0.0 and value.dtype == torch.float64 and value.shape == ()
    assert value.grad_fn is None and not value.requires_grad


def test_golden_values():
    ab, student, teacher = golden_setup("ab", SMALL_STUDENT, SMALL_TEACHER, main_stage=True)
    connected = [connector(s) for connector, s in zip(ab.connectors, student, strict=True)]
    reference = ref_ab(connected, teacher)
    ctx = context(torch.zeros(4))
    value = ab(student, teacher, torch.ones(4, 3, dtype=torch.float64), ctx)
    pretrain = ab.pretrain_loss(student, teacher, ctx)
    for loss in (value, pretrain):
        assert loss.item() == pytest.approx(reference.item(), rel=1e-10)
        assert loss.item() == pytest.approx(1.4443269841316493, rel=1e-9)


def test_pretraining_trains_the_student_maps_and_connectors():
    torch.manual_seed(0)
    ab = build("ab", SMALL_STUDENT, SMALL_TEACHER)
    generator = torch.Generator().manual_seed(1)
    student = [nn.Parameter(f) for f in random_feats(ab.student_spots, 8, generator)]
    teacher = random_feats(ab.teacher_spots, 8, generator)
    optimizer = torch.optim.SGD([*student, *ab.pretrain_parameters()], lr=0.5, momentum=0.9)
    ctx = context(torch.zeros(8))
    losses = []
    for _ in range(20):
        loss = ab.pretrain_loss(student, teacher, ctx)
        optimizer.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in ab.pretrain_parameters())
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("case", MASK_CASES)
def test_mask_equals_reference_on_selected_sub_batch(case):
    ab = build("ab", SMALL_STUDENT, SMALL_TEACHER, main_stage=True)
    generator = torch.Generator().manual_seed(80 + case)
    student = [f.requires_grad_() for f in random_feats(ab.student_spots, 6, generator)]
    teacher = random_feats(ab.teacher_spots, 6, generator)
    weights = mask_matrix(case, 3)
    value = ab(student, teacher, weights, context(torch.zeros(6)))

    connected = [c(s) for c, s in zip(ab.connectors, student, strict=True)]  # BN: whole batch

    def spot_reference(k, sel):
        return ref_ab_layer(connected[k][sel], teacher[k][sel], k, len(connected))

    expected = subbatch_sum(weights, spot_reference)
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-6)
    value.backward()
    assert_gated_grads([*student, *ab.parameters()], all_zero=not weights.any())
    if not weights.any():
        assert value.item() == 0.0


@pytest.mark.parametrize("pair", sorted(PAIRS))
@pytest.mark.parametrize("main_stage", [False, True])
def test_works_on_model_pairs(pair, main_stage):
    value = exercise_on_pair("ab", *PAIRS[pair], main_stage=main_stage)
    assert (value > 0) == main_stage
