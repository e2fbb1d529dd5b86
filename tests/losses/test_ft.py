"""FT: paraphraser/translator architecture, golden values, pre-training, gating, model pairs."""

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
    random_feats,
)
from ._reference import (
    ref_ft,
    ref_mse,
)


def _layers(sequential):
    """(kind, in, out, kernel) of each conv and the kinds of the other layers."""
    description = []
    for layer in sequential:
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
            convolution = (type(layer).__name__, layer.in_channels, layer.out_channels)
            description.append((*convolution, layer.kernel_size, layer.stride, layer.padding))
        elif isinstance(layer, nn.LeakyReLU):
            description.append(("LeakyReLU", layer.negative_slope))
        else:
            description.append((type(layer).__name__,))
    return description


def test_declares_the_published_setup():
    ft = build("ft", SMALL_STUDENT, SMALL_TEACHER)
    assert ft.spot_role == "last_stage"
    assert ft.pretrain_epochs == 30
    assert not ft.pretrain_trains_student
    assert ft.params.model_dump() == {
        "factor_rate": 0.5,
        "p1": 2.0,
        "p2": 1.0,
        "pretrain_epochs": 30,
        "pretrain_lr": 0.01,
        "pretrain_momentum": 0.9,
        "pretrain_weight_decay": 5e-4,
    }
    assert ft.pretrain_parameters() == list(ft.paraphrasers.parameters())


def test_paraphraser_has_no_batch_norm_and_translator_has():
    """RepDistiller's Paraphraser(use_bn=False) and Translator(use_bn=True), factor rate 0.5."""
    ft = build("ft", SMALL_STUDENT, SMALL_TEACHER)  # student 8 channels, teacher 9 -> factor 4
    leaky = ("LeakyReLU", 0.1)

    def conv(kind, c_in, c_out):
        return (kind, c_in, c_out, (3, 3), (1, 1), (1, 1))

    paraphraser = ft.paraphrasers[0]
    assert _layers(paraphraser.encoder) == [
        conv("Conv2d", 9, 9),
        leaky,
        conv("Conv2d", 9, 4),
        leaky,
        conv("Conv2d", 4, 4),
        leaky,
    ]
    assert _layers(paraphraser.decoder) == [
        conv("ConvTranspose2d", 4, 4), leaky,
        conv("ConvTranspose2d", 4, 9), leaky,
        conv("ConvTranspose2d", 9, 9), leaky,
    ]  # fmt: skip
    bn = ("BatchNorm2d",)
    assert _layers(ft.translators[0].encoder) == [
        conv("Conv2d", 8, 8), bn, leaky,
        conv("Conv2d", 8, 4), bn, leaky,
        conv("Conv2d", 4, 4), bn, leaky,
    ]  # fmt: skip


def test_golden_values():
    ft, student, teacher = golden_setup("ft", SMALL_STUDENT, SMALL_TEACHER)
    ctx = context(torch.zeros(4))
    value = ft(student, teacher, torch.ones(4, 1, dtype=torch.float64), ctx)
    reference = ref_ft(ft.translators[0](student[0]), ft.paraphrasers[0].encoder(teacher[0]))
    assert value.item() == pytest.approx(reference.item(), rel=1e-10)
    assert value.item() == pytest.approx(0.24411720000719228, rel=1e-9)

    pretrain = ft.pretrain_loss(student, teacher, ctx)
    _, reconstruction = ft.paraphrasers[0](teacher[0])
    assert pretrain.item() == pytest.approx(ref_mse(reconstruction, teacher[0]).item(), rel=1e-10)
    assert pretrain.item() == pytest.approx(0.9429747139605321, rel=1e-9)


def test_paraphraser_pretraining_reduces_the_reconstruction_loss():
    torch.manual_seed(0)
    ft = build("ft", SMALL_STUDENT, SMALL_TEACHER)
    generator = torch.Generator().manual_seed(1)
    student = random_feats(ft.student_spots, 8, generator)
    teacher = [f.relu() for f in random_feats(ft.teacher_spots, 8, generator)]
    params, ctx = ft.params, context(torch.zeros(8))
    optimizer = torch.optim.SGD(
        ft.pretrain_parameters(),
        lr=params.pretrain_lr,
        momentum=params.pretrain_momentum,
        weight_decay=params.pretrain_weight_decay,
    )
    losses = []
    for _ in range(30):
        loss = ft.pretrain_loss(student, teacher, ctx)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    assert all(p.grad is None for p in ft.translators.parameters())


def test_main_stage_leaves_the_paraphraser_frozen():
    ft = build("ft", SMALL_STUDENT, SMALL_TEACHER)
    generator = torch.Generator().manual_seed(2)
    student = [f.requires_grad_() for f in random_feats(ft.student_spots, 4, generator)]
    teacher = random_feats(ft.teacher_spots, 4, generator)
    ft(student, teacher, torch.ones(4, 1), context(torch.zeros(4))).backward()
    assert all(p.grad is None for p in ft.paraphrasers.parameters())
    assert all(p.grad is not None for p in ft.translators.parameters())


@pytest.mark.parametrize("case", MASK_CASES)
def test_mask_equals_reference_on_selected_sub_batch(case):
    """No selected sample gives exactly 0 (not the authors' ungated fallback, method.md §6.3)."""

    def reference(ft, student, teacher):
        student_factor = ft.translators[0](student[0])  # the translator's BN sees the whole batch
        teacher_factor = ft.paraphrasers[0].encoder(teacher[0])
        return lambda k, sel: ref_ft(student_factor[sel], teacher_factor[sel])

    check_gated_equals_subbatch("ft", case, 70, reference, lambda ft: ft.translators.parameters())


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_works_on_model_pairs(pair):
    assert exercise_on_pair("ft", *PAIRS[pair]) > 0
