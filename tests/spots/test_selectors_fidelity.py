"""The selectors where they must match the authors' code line by line (issue 11, points 1 and 5)."""

from __future__ import annotations

import torch

from sakd.spots import RandomSelector, build_selector, routing_objective


def _hinge_gradient(choices: list[float]) -> tuple[float, torch.Tensor]:
    """The hinge's value and its gradient w.r.t. a_K on a batch whose routed CE has no a_K."""
    batch = len(choices)
    labels = torch.zeros(batch, dtype=torch.long)
    logits = torch.zeros(batch, 3)
    logit_choice = torch.tensor(choices, requires_grad=True)
    loss, stats = routing_objective(logits, logits, labels, logit_choice, gamma=1.0)
    loss.backward()
    return stats["hinge"].item(), logit_choice.grad


def test_hinge_has_no_gradient_at_the_kink() -> None:
    # Σ a_K = B/2 exactly: the authors' Python max(0, 0) returns the integer 0 (no gradient).
    value, grad = _hinge_gradient([1.0, 0, 1, 0, 1, 0, 1, 0])
    assert value == 0.0
    assert torch.equal(grad, torch.zeros(8))


def test_hinge_below_half_pushes_every_sample_by_minus_one() -> None:
    # The hinge is not normalised: one unit of loss per missing teacher-path sample.
    value, grad = _hinge_gradient([1.0, 0, 1, 0, 0, 0, 1, 0])
    assert value == 1.0
    assert torch.equal(grad, torch.full((8,), -1.0))
    value, grad = _hinge_gradient([1.0, 1, 1, 1, 1, 0, 1, 0])
    assert value == 0.0 and torch.equal(grad, torch.zeros(8))


def _random(make_pair, **kwargs):
    student, teacher = make_pair()
    return build_selector("random", student, teacher, [1, 2, 3], input_size=8, **kwargs)


def test_random_as_the_authors_ties_the_logit_spot_to_the_last_feature_spot(
    make_pair, make_input
) -> None:
    student, teacher = make_pair()
    inp = make_input(student, teacher, batch=400)
    tied = _random(make_pair, routing_ce_weight=2.0, logit_follows_last_spot=True, seed=5)
    assert isinstance(tied, RandomSelector)
    selection = tied(inp)
    weights = selection.weights
    assert weights.shape == (400, 4)
    assert torch.equal(weights[:, -1], weights[:, -2])
    assert not torch.equal(weights[:, 0], weights[:, 1])
    assert torch.allclose(weights.mean(0), torch.full((4,), 0.5), atol=0.08)
    assert selection.ce_scale == 2.0 and selection.routing_loss is None


def test_random_as_the_authors_scales_ce_by_gamma_for_every_distiller(
    make_pair, make_input
) -> None:
    student, teacher = make_pair()
    inp = make_input(student, teacher, batch=400)
    own_draw = _random(make_pair, routing_ce_weight=2.0, seed=5)(inp)
    assert own_draw.ce_scale == 2.0
    assert not torch.equal(own_draw.weights[:, -1], own_draw.weights[:, -2])


def test_independent_random_draws_every_column_and_keeps_ce(make_pair, make_input) -> None:
    student, teacher = make_pair()
    inp = make_input(student, teacher, batch=400)
    selector = _random(
        make_pair,
        routing_ce_weight=2.0,
        random_scheme="independent",
        logit_follows_last_spot=True,
        seed=5,
    )
    selection = selector(inp)
    assert selection.ce_scale == 1.0
    assert not torch.equal(selection.weights[:, -1], selection.weights[:, -2])


def test_other_modes_leave_ce_alone(make_pair, make_input) -> None:
    student, teacher = make_pair()
    inp = make_input(student, teacher)
    for mode in ("fixed", "adaptive", "anti"):
        selector = build_selector(
            mode, student, teacher, [1, 2], input_size=8, routing_ce_weight=2.0
        )
        assert selector(inp).ce_scale == 1.0
