"""The routed network across token maps: ViT ↔ ViT, CNN → ViT and ViT → CNN (no timm needed)."""

from __future__ import annotations

import pytest
import torch
from tests.models._tiny_vit import TinyViT

from sakd.errors import SakdError
from sakd.models import create_model
from sakd.models.wrap import stage_model
from sakd.spots import SelectorInput, build_selector

SIZE = 16


def _vit(dim: int, seed: int):
    torch.manual_seed(seed)
    return stage_model(TinyViT(dim=dim, depth=4, patch=4, size=SIZE), input_size=SIZE)


def _cnn(seed: int):
    torch.manual_seed(seed)
    return create_model("resnet8", num_classes=5)


# (student, teacher, student spots, teacher spots): resnet8 has a stem (0), stages 1-3, pooled 4;
# the ViTs have blocks 0-3 and pooled 4.
PAIRS = {
    "vit-vit": (lambda: _vit(16, 0), lambda: _vit(24, 1), [0, 1, 3], [0, 1, 3]),
    "cnn-to-vit": (lambda: _vit(16, 0), lambda: _cnn(1), [0, 1, 2], [1, 2, 3]),
    "vit-to-cnn": (lambda: _cnn(0), lambda: _vit(24, 1), [1, 2, 3], [0, 1, 2]),
}


def _setup(pair: str):
    make_student, make_teacher, s_idx, t_idx = PAIRS[pair]
    student, teacher = make_student(), make_teacher()
    teacher.eval().requires_grad_(False)  # frozen, as the distillation task holds it
    selector = build_selector(
        "adaptive", student, teacher, s_idx, input_size=SIZE, teacher_spot_indices=t_idx
    )
    images = torch.randn(6, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        t_feats, t_logits = teacher.forward_features(images)
    s_feats, s_logits = student.train().forward_features(images)
    inp = SelectorInput(images, torch.arange(6) % 5, s_feats, t_feats, s_logits, t_logits)
    return student, teacher, selector, inp


@pytest.mark.parametrize("pair", list(PAIRS))
def test_all_teacher_decisions_give_the_teacher_logits(pair):
    _, _, selector, inp = _setup(pair)
    routed = selector.routed(inp.images, torch.ones(6, 4))
    assert torch.equal(routed, inp.teacher_logits)
    reused = selector.routed(inp.images, torch.ones(6, 4), selector.first_teacher_output(inp))
    assert torch.equal(reused, inp.teacher_logits)


@pytest.mark.parametrize("pair", list(PAIRS))
def test_all_student_decisions_give_the_student_eval_logits(pair):
    student, _, selector, inp = _setup(pair)
    routed = selector.routed(inp.images, torch.zeros(6, 4))
    student.eval()
    with torch.no_grad():
        expected = student(inp.images)
    assert torch.equal(routed, expected)


@pytest.mark.parametrize("pair", list(PAIRS))
def test_mixed_decisions_train_every_adaptor_and_only_the_selector(pair):
    student, _, selector, inp = _setup(pair)
    decisions = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0]] * 2, dtype=torch.float32)
    routed = selector.routed(inp.images, decisions)
    assert routed.shape == (6, 5) and torch.isfinite(routed).all()
    selection = selector(inp)
    selection.routing_loss.backward()
    assert all(p.grad is not None for p in [*selector.s2t.parameters(), *selector.t2s.parameters()])
    assert all(p.grad is None for p in student.parameters())


def test_the_first_teacher_segment_is_the_teachers_first_spot():
    _, teacher, selector, inp = _setup("cnn-to-vit")
    with torch.no_grad():
        assert torch.equal(selector.first_teacher_output(inp), teacher.run(inp.images, 0, 2))


def test_a_token_map_cannot_pair_with_a_pooled_vector():
    student, teacher = _vit(16, 0), _cnn(1)
    with pytest.raises(SakdError, match="choose spots of the same kind"):
        build_selector("adaptive", student, teacher, [3], input_size=SIZE, teacher_spot_indices=[4])
    with pytest.raises(SakdError, match="must pair up"):
        build_selector(
            "adaptive", student, teacher, [0, 1], input_size=SIZE, teacher_spot_indices=[1]
        )
