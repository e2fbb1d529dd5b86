"""Selectors: modes, gradient separation, the routing loss, initialisation and resumable state."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

import sakd.models as models
from sakd.errors import SakdError
from sakd.spots import (
    AdaptiveSelector,
    AntiSelector,
    FixedSelector,
    RandomSelector,
    SelectorInput,
    build_selector,
    routing_objective,
)


def _adaptive(student, teacher, spots=(1, 2, 3), mode="adaptive", **kwargs):
    return build_selector(mode, student, teacher, list(spots), input_size=8, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spot_indices": [3, 1]}, "strictly ascending"),
        ({"spot_indices": [1, 1]}, "strictly ascending"),
        ({"spot_indices": [5]}, "out of range"),
        ({"spot_indices": [-1]}, "out of range"),
        ({"spot_indices": [3, 4], "mode": "fixed"}, None),
    ],
)
def test_build_validates_its_input(make_pair, kwargs, message) -> None:
    student, teacher = make_pair()
    args = {"mode": "adaptive", "spot_indices": [1, 2], **kwargs}
    mode, spots = args.pop("mode"), args.pop("spot_indices")
    if message is None:
        assert build_selector(mode, student, teacher, spots, input_size=8, **args).num_spots == 3
        return
    with pytest.raises(SakdError, match=message) as error:
        build_selector(mode, student, teacher, spots, input_size=8, **args)
    assert "\n" not in str(error.value)


def test_build_picks_the_class_of_each_mode(make_pair) -> None:
    student, teacher = make_pair()
    classes = {"fixed": FixedSelector, "random": RandomSelector}
    classes |= {"adaptive": AdaptiveSelector, "anti": AntiSelector}
    for mode, cls in classes.items():
        selector = _adaptive(student, teacher, mode=mode)
        assert type(selector) is cls and selector.mode == mode
    assert list(_adaptive(student, teacher, mode="fixed").parameters()) == []
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training


def test_fixed_selects_everything(make_pair, make_input) -> None:
    student, teacher = make_pair()
    selection = _adaptive(student, teacher, mode="fixed")(make_input(student, teacher))
    assert torch.equal(selection.weights, torch.ones(6, 4))
    assert selection.routing_loss is None


def test_random_is_a_fair_reproducible_coin(make_pair, make_input) -> None:
    student, teacher = make_pair()
    inp = make_input(student, teacher, batch=500)
    selector = _adaptive(student, teacher, mode="random", seed=3)
    weights = torch.cat([selector(inp).weights for _ in range(4)])
    assert weights.shape == (2000, 4) and selection_is_binary(weights)
    assert torch.allclose(weights.mean(0), torch.full((4,), 0.5), atol=0.04)
    assert _adaptive(student, teacher, mode="random", seed=3)(inp).weights.equal(weights[:500])
    assert not _adaptive(student, teacher, mode="random", seed=4)(inp).weights.equal(weights[:500])


def selection_is_binary(weights: torch.Tensor) -> bool:
    return bool(((weights == 0) | (weights == 1)).all())


@pytest.mark.parametrize("spots", [[1, 2, 3], [4], []])
def test_adaptive_selection_contract(make_pair, make_input, spots) -> None:
    student, teacher = make_pair()
    selection = _adaptive(student, teacher, spots)(make_input(student, teacher))
    assert selection.weights.shape == (6, len(spots) + 1)
    assert selection.weights.dtype == torch.float32 and not selection.weights.requires_grad
    assert selection_is_binary(selection.weights)
    assert selection.routing_loss.dim() == 0 and selection.routing_loss.requires_grad
    assert set(selection.stats) == {"routing_ce", "hinge", "gamma_weight"}


def test_routing_loss_matches_its_definition(make_pair, make_input) -> None:
    student, teacher = make_pair()
    selector = _adaptive(student, teacher, routing_ce_weight=2.0)
    inp = make_input(student, teacher)
    state = selector.rng.state_dict()
    selection = selector(inp)
    selector.rng.load_state_dict(state)
    decisions = selector.sample_decisions(inp)
    mixed = selector.routed(inp.images, decisions)
    routed_ce = F.cross_entropy(mixed, inp.labels)
    student_ce = F.cross_entropy(inp.student_logits, inp.labels)
    weight = 2.0 if routed_ce > student_ce else 0.5
    hinge = max(0.0, 3 - decisions[:, -1].sum().item())
    assert torch.allclose(selection.routing_loss, weight * routed_ce + hinge)
    assert selection.stats["gamma_weight"].item() == weight
    assert selection.stats["hinge"].item() == hinge


@pytest.mark.parametrize(
    ("student_loss_shift", "expected_weight"), [(10.0, 1 / 3), (-10.0, 3.0), (0.0, 1.0)]
)
def test_gamma_rule(student_loss_shift, expected_weight) -> None:
    labels = torch.tensor([0, 1, 2, 3])
    mixed = torch.randn(4, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    student = mixed.detach().clone()
    student[torch.arange(4), labels] -= student_loss_shift
    logit_choice = torch.tensor([1.0, 1.0, 0.0, 1.0])
    loss, stats = routing_objective(mixed, student, labels, logit_choice, gamma=3.0)
    assert stats["gamma_weight"].item() == pytest.approx(expected_weight)
    assert stats["hinge"].item() == 0.0
    assert loss.item() == pytest.approx(expected_weight * F.cross_entropy(mixed, labels).item())


def test_hinge_pushes_half_the_batch_onto_the_teacher_logits() -> None:
    labels = torch.zeros(8, dtype=torch.long)
    logits = torch.zeros(8, 3)
    logit_choice = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0], requires_grad=True)
    loss, stats = routing_objective(logits, logits, labels, logit_choice, gamma=1.0)
    assert stats["hinge"].item() == 3.0
    loss.backward()
    assert torch.equal(logit_choice.grad, torch.full((8,), -1.0))


def test_anti_weights_are_the_complement_of_adaptive(make_pair, make_input) -> None:
    student, teacher = make_pair()
    adaptive = _adaptive(student, teacher, seed=5)
    anti = _adaptive(student, teacher, mode="anti", seed=11)
    anti.load_state_dict(adaptive.state_dict())
    inp = make_input(student, teacher, batch=32)
    for _ in range(3):
        ours, theirs = adaptive(inp), anti(inp)
        assert 0 < ours.weights.mean() < 1
        assert torch.equal(theirs.weights, 1 - ours.weights)
        assert torch.equal(theirs.routing_loss, ours.routing_loss)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if torch.is_tensor(v)}


def _unchanged(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = _snapshot(module)
    return all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("mode", ["adaptive", "anti"])
def test_routing_loss_never_touches_the_student(make_pair, make_input, mode) -> None:
    student, teacher = make_pair()
    selector = _adaptive(student, teacher, mode=mode)
    every_param = [*student.parameters(), *selector.parameters()]
    optimizer = torch.optim.SGD(every_param, lr=0.1, momentum=0.9)
    inp = make_input(
        student, teacher
    )  # the normal train-mode pass updates BN stats: snapshot after
    student_before, teacher_before = _snapshot(student), _snapshot(teacher)
    selector_before = _snapshot(selector)

    selector(inp).routing_loss.backward()
    optimizer.step()

    assert all(p.grad is None for p in student.parameters())
    assert _unchanged(student, student_before) and _unchanged(teacher, teacher_before)
    assert all(p.grad is not None for p in selector.parameters())
    assert not _unchanged(selector.policy, _subset(selector_before, "policy."))
    assert not _unchanged(selector.s2t, _subset(selector_before, "s2t."))
    assert not _unchanged(selector.t2s, _subset(selector_before, "t2s."))


def _subset(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def test_student_loss_never_touches_policy_or_adaptors(make_pair, make_input) -> None:
    student, teacher = make_pair()
    selector = _adaptive(student, teacher)
    optimizer = torch.optim.SGD([*student.parameters(), *selector.parameters()], lr=0.1)
    inp = make_input(student, teacher)
    selection = selector(inp)
    weights = selection.weights
    feature_gap = (inp.student_feats[2].mean((1, 2, 3)) - inp.teacher_feats[2].mean((1, 2, 3))) ** 2
    student_loss = F.cross_entropy(inp.student_logits, inp.labels)
    student_loss = student_loss + (weights[:, 1] * feature_gap).mean()
    selector_before = _snapshot(selector)

    student_loss.backward()
    optimizer.step()

    assert all(p.grad is None for p in selector.parameters())
    assert _unchanged(selector, selector_before)
    assert all(p.grad is not None for p in student.parameters())


def test_one_backward_gives_each_side_exactly_its_own_gradient(make_pair, make_input) -> None:
    def gradients(use_student: bool, use_routing: bool):
        student, teacher = make_pair()
        selector = _adaptive(student, teacher, seed=2)
        inp = make_input(student, teacher)
        selection = selector(inp)
        student_loss = F.cross_entropy(inp.student_logits, inp.labels)
        student_loss = (
            student_loss + (selection.weights[:, -1] * inp.student_logits.pow(2).mean(1)).mean()
        )
        loss = use_student * student_loss + use_routing * selection.routing_loss
        loss.backward()
        return [p.grad for p in student.parameters()], [p.grad for p in selector.parameters()]

    both_student, both_selector = gradients(True, True)
    only_student, _ = gradients(True, False)
    _, only_selector = gradients(False, True)
    assert all(torch.equal(a, b) for a, b in zip(both_student, only_student, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(both_selector, only_selector, strict=True))


def test_homogeneous_init_routes_everything_through_the_teacher(make_pair, make_input) -> None:
    student, teacher = make_pair()
    selector = _adaptive(student, teacher, homogeneous=True)
    bias = selector.policy.linear.bias
    assert bias.is_leaf and bias.requires_grad and isinstance(bias, torch.nn.Parameter)
    assert (bias.view(4, 2)[:, 0] - bias.view(4, 2)[:, 1]).min() > 9
    inp = make_input(student, teacher, batch=64, seed=1)
    logits = selector.policy(inp.teacher_feats[-1], inp.student_feats[-1])
    assert torch.softmax(logits, -1)[..., 0].min() > 0.999
    selection = selector(inp)
    assert torch.equal(selection.weights, torch.ones(64, 4))
    selection.routing_loss.backward()
    assert bias.grad is not None


def test_heterogeneous_init_starts_near_even(make_pair, make_input) -> None:
    student, teacher = make_pair()
    selector = _adaptive(student, teacher)
    inp = make_input(student, teacher, batch=256)
    assert 0.35 < selector(inp).weights.mean() < 0.65


def test_generator_state_round_trips_through_a_checkpoint(make_pair, make_input) -> None:
    student, teacher = make_pair()
    inp = make_input(student, teacher, batch=32)
    for mode in ("adaptive", "random"):
        original = _adaptive(student, teacher, mode=mode, seed=1)
        original(inp)
        buffer = io.BytesIO()
        torch.save(original.state_dict(), buffer)
        buffer.seek(0)
        resumed = _adaptive(student, teacher, mode=mode, seed=7)
        resumed.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
        for _ in range(2):
            assert torch.equal(resumed(inp).weights, original(inp).weights)


def test_the_seed_alone_changes_the_decisions(make_pair, make_input) -> None:
    student, teacher = make_pair()
    inp = make_input(student, teacher, batch=32)
    first = _adaptive(student, teacher, seed=1)
    same_seed, other_seed = _adaptive(student, teacher, seed=1), _adaptive(student, teacher, seed=2)
    same_seed.load_state_dict(first.state_dict())
    other_seed.load_state_dict({**first.state_dict(), "_extra_state": other_seed.get_extra_state()})
    weights = first(inp).weights
    assert torch.equal(same_seed(inp).weights, weights)
    assert not torch.equal(other_seed(inp).weights, weights)


def test_selector_owns_only_policy_and_adaptors(make_pair) -> None:
    student, teacher = make_pair()
    selector = _adaptive(student, teacher)
    names = {name.split(".")[0] for name, _ in selector.named_parameters()}
    assert names == {"policy", "s2t", "t2s"}
    student_ids = {id(p) for p in [*student.parameters(), *teacher.parameters()]}
    assert not student_ids & {id(p) for p in selector.parameters()}


def test_runs_under_cpu_bfloat16_autocast(make_pair, make_input) -> None:
    student, teacher = make_pair()
    selector = _adaptive(student, teacher, [0, 2, 4])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inp = make_input(student, teacher)
        selection = selector(inp)
        student_loss = F.cross_entropy(inp.student_logits.float(), inp.labels)
    (student_loss + selection.routing_loss).backward()
    assert selection.weights.dtype == torch.float32 and selection_is_binary(selection.weights)
    assert torch.isfinite(selection.routing_loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in selector.parameters())


def test_real_zoo_pair(make_pair) -> None:
    if not {"resnet8", "resnet20"} <= set(models.list_models()):
        pytest.skip("resnet8 / resnet20 are not in the zoo yet")
    torch.manual_seed(0)
    student = models.create_model("resnet8", num_classes=10)
    teacher = models.create_model("resnet20", num_classes=10).eval()
    spots = [s.index for s in models.resolve_spots(student.spot_info(16), "stages")]
    selector = build_selector("adaptive", student, teacher, spots, input_size=16, homogeneous=True)
    images = torch.randn(4, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        teacher_feats, teacher_logits = teacher.forward_features(images)
    student_feats, student_logits = student.forward_features(images)
    inp = SelectorInput(
        images, labels, student_feats, teacher_feats, student_logits, teacher_logits
    )
    selection = selector(inp)
    assert selection.weights.shape == (4, len(spots) + 1)
    selection.routing_loss.backward()
    assert all(p.grad is None for p in student.parameters())
    assert torch.equal(selector.routed(images, torch.ones(4, len(spots) + 1)), teacher_logits)


def test_adaptive_needs_a_pooled_last_feature(make_pair) -> None:
    student, teacher = make_pair()
    del student.stages[-1]
    student.stage_roles = student.stage_roles[:-1]
    with pytest.raises(SakdError, match="student's last spot feature is a map"):
        build_selector("adaptive", student, teacher, [1], input_size=8)
    assert build_selector("fixed", student, teacher, [1], input_size=8).num_spots == 2
