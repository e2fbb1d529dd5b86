"""The routed (multi-path) network: per-sample paths through teacher and student segments."""

from __future__ import annotations

import pytest
import torch

from sakd.spots import build_selector

SPOT_SETS = [[1, 2, 3], [2], [4], [0, 2, 4], []]


def _selector(student, teacher, spots):
    return build_selector("adaptive", student, teacher, spots, input_size=8)


def _decisions(batch: int, num_spots: int, value: float) -> torch.Tensor:
    return torch.full((batch, num_spots), value)


@pytest.mark.parametrize("spots", SPOT_SETS)
def test_all_teacher_decisions_give_the_teacher_logits(make_pair, make_input, spots) -> None:
    student, teacher = make_pair()
    selector = _selector(student, teacher, spots)
    inp = make_input(student, teacher)
    routed = selector.routed(inp.images, _decisions(6, len(spots) + 1, 1.0))
    assert torch.equal(routed, inp.teacher_logits)


@pytest.mark.parametrize("spots", SPOT_SETS)
def test_all_student_decisions_give_the_student_eval_logits(make_pair, make_input, spots) -> None:
    student, teacher = make_pair()
    selector = _selector(student, teacher, spots)
    inp = make_input(student, teacher)
    running_before = {k: v.clone() for k, v in student.state_dict().items()}

    routed = selector.routed(inp.images, _decisions(6, len(spots) + 1, 0.0))

    assert student.training and all(m.training for m in student.modules())
    assert all(torch.equal(v, running_before[k]) for k, v in student.state_dict().items())
    student.eval()
    with torch.no_grad():
        expected = student(inp.images)
    assert torch.equal(routed, expected)
    assert not torch.allclose(expected, inp.student_logits), "eval and train logits should differ"


def test_routed_pass_restores_mixed_student_modes(make_pair, make_input) -> None:
    student, teacher = make_pair()
    student.stages[1].eval()
    modes = [m.training for m in student.modules()]
    selector = _selector(student, teacher, [1, 2, 3])
    selector(make_input(student, teacher))
    assert [m.training for m in student.modules()] == modes


def _hand_path(selector, student, teacher, images, pattern):
    """One path for the whole batch, built stage by stage from the spec (method.md §1.5)."""
    spots = selector.spot_indices
    bounds = [0, *(p + 1 for p in spots), student.num_stages + 1]
    student_x = teacher_x = images
    with torch.no_grad():
        for j, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            student_out = student.run(student_x, start, stop)
            teacher_out = teacher.run(teacher_x, start, stop)
            if j == len(spots):
                break
            if pattern[j]:
                teacher_x, student_x = teacher_out, selector.t2s[j](teacher_out)
            else:
                teacher_x, student_x = selector.s2t[j](student_out), student_out
    return teacher_out if pattern[-1] else student_out


@pytest.mark.parametrize("spots", [[1, 2, 3], [0, 4]])
def test_mixed_decisions_route_each_sample_on_its_own_path(make_pair, make_input, spots) -> None:
    student, teacher = make_pair()
    selector = _selector(student, teacher, spots)
    selector.eval()  # adaptor BN on running stats: a sample's path does not depend on the batch
    student.eval()
    num_spots = len(spots) + 1
    patterns = torch.tensor(
        [[(row >> k) & 1 for k in range(num_spots)] for row in range(2**num_spots)],
        dtype=torch.float32,
    )
    images = torch.randn(len(patterns), 3, 8, 8, generator=torch.Generator().manual_seed(3))

    with torch.no_grad():
        routed = selector.routed(images, patterns)
    for row, pattern in enumerate(patterns.tolist()):
        expected = _hand_path(selector, student, teacher, images, pattern)[row]
        torch.testing.assert_close(routed[row], expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(routed[0], routed[-1])


@pytest.mark.parametrize("spots", [[1, 2, 3], [0, 2], []])
def test_first_teacher_segment_reuse_equals_recomputing(make_pair, make_input, spots) -> None:
    student, teacher = make_pair()
    selector = _selector(student, teacher, spots)
    inp = make_input(student, teacher)
    first = selector.first_teacher_output(inp)
    stop = spots[0] + 1 if spots else None
    with torch.no_grad():
        assert torch.equal(first, teacher.run(inp.images, 0, stop))

    decisions = torch.randint(2, (6, len(spots) + 1), generator=torch.Generator().manual_seed(0))
    selector.eval()
    reused = selector.routed(inp.images, decisions.float(), first)
    recomputed = selector.routed(inp.images, decisions.float(), None)
    assert torch.equal(reused, recomputed)


def test_reuse_accepts_a_pre_activation_first_feature(make_pair, make_input) -> None:
    student, teacher = make_pair()
    selector = _selector(student, teacher, [0, 2])
    inp = make_input(student, teacher)
    with torch.no_grad():
        preact_feats, _ = teacher.forward_features(inp.images, preact=True)
    assert (preact_feats[0] < 0).any()
    decisions = torch.ones(6, 3)
    decisions[::2, 0] = 0
    selector.eval()
    assert torch.equal(
        selector.routed(inp.images, decisions, preact_feats[0]),
        selector.routed(inp.images, decisions, inp.teacher_feats[0]),
    )


def test_a_teacher_left_in_train_mode_still_routes_in_eval_mode(make_pair, make_input) -> None:
    student, teacher = make_pair()
    selector = _selector(student, teacher, [1, 2, 3])
    inp = make_input(student, teacher)
    teacher.train()
    stats_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    routed = selector.routed(inp.images, _decisions(6, 4, 1.0))
    assert torch.equal(routed, inp.teacher_logits)
    assert all(m.training for m in teacher.modules())
    assert all(torch.equal(v, stats_before[k]) for k, v in teacher.state_dict().items())


def test_spots_of_different_spatial_sizes_are_bridged(make_pair, make_input) -> None:
    student, teacher = make_pair(student_stem_stride=2)
    spots = [0, 1, 2, 3]
    student_shapes = [student.spot_info(8)[i].shape for i in spots]
    teacher_shapes = [teacher.spot_info(8)[i].shape for i in spots]
    assert all(s[1] * 2 == t[1] for s, t in zip(student_shapes, teacher_shapes, strict=True))
    selector = _selector(student, teacher, spots)
    inp = make_input(student, teacher)
    assert torch.equal(selector.routed(inp.images, _decisions(6, 5, 1.0)), inp.teacher_logits)
    student.eval()
    with torch.no_grad():
        expected = student(inp.images)
    assert torch.equal(selector.routed(inp.images, _decisions(6, 5, 0.0)), expected)
    student.train()
    selection = selector(inp)
    selection.routing_loss.backward()
    assert all(p.grad is not None for p in selector.parameters())
