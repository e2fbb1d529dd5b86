"""FitNet: golden value, per-sample gating, real model pairs."""

import pytest
import torch

from sakd.models.connectors import ConvReg

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
    ref_mse,
)


def test_declares_the_published_setup():
    fitnet = build("fitnet", SMALL_STUDENT, SMALL_TEACHER)
    assert fitnet.spot_role == "stage:2"
    assert [s.index for s in fitnet.student_spots] == [2]  # RepDistiller hint_layer = 2
    assert isinstance(fitnet.regressors[0], ConvReg)
    assert fitnet.pretrain_epochs == 0


def test_golden_value():
    fitnet, student, teacher = golden_setup("fitnet", SMALL_STUDENT, SMALL_TEACHER)
    weights = torch.ones(4, 1, dtype=torch.float64)
    value = fitnet(student, teacher, weights, context(torch.zeros(4)))
    reference = ref_mse(fitnet.regressors[0](student[0]), teacher[0])
    assert value.item() == pytest.approx(reference.item(), rel=1e-10)
    assert value.item() == pytest.approx(1.515861150549018, rel=1e-9)


@pytest.mark.parametrize("case", MASK_CASES)
def test_mask_equals_reference_on_selected_sub_batch(case):
    """The regressor (BN in train mode) sees the whole batch, as in the SAKD authors' code."""

    def reference(fitnet, student, teacher):
        hint = fitnet.regressors[0](student[0])
        return lambda k, sel: ref_mse(hint[sel], teacher[0][sel])

    check_gated_equals_subbatch("fitnet", case, 30, reference, lambda fitnet: fitnet.parameters())


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_works_on_model_pairs(pair):
    assert exercise_on_pair("fitnet", *PAIRS[pair]) > 0
