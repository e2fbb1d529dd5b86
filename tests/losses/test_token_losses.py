"""Distillers on transformer token maps: AT as per-token energy, FitNet token regression, refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sakd.errors import SakdError
from sakd.losses.at import at_per_sample
from sakd.losses.tokens import token_distillers
from sakd.models.staged import SpotInfo
from sakd.models.tokens import TokenLayout

from ._helpers import MASK_CASES, build, check_gated_equals_subbatch, context


def vit_spots(dim: int, side: int = 4, prefix: int = 1) -> list[SpotInfo]:
    """Three block spots (tokens) and the pooled vector, as a staged ViT describes them."""
    layout = TokenLayout(prefix, (side, side))
    blocks = [
        SpotInfo(i, "stage", dim, 16 // side, (layout.num_tokens, dim), f"blocks.{i}", layout)
        for i in range(3)
    ]
    return [*blocks, SpotInfo(3, "pooled", dim, 0, (dim,), "pooled")]


def cnn_spots() -> list[SpotInfo]:
    """A stem and three stages (16×16, 8×8, 4×4 maps) and the pooled vector."""
    shapes = [(4, 16, 16), (4, 16, 16), (8, 8, 8), (16, 4, 4)]
    maps = [
        SpotInfo(i, "stem" if i == 0 else "stage", s[0], 16 // s[1], s, f"s{i}")
        for i, s in enumerate(shapes)
    ]
    return [*maps, SpotInfo(4, "pooled", 16, 0, (16,), "pooled")]


def energy(tokens: torch.Tensor, prefix: int, p: float = 2.0) -> torch.Tensor:
    """Per-patch-token energy mean_c f^p, L2-normalised over the tokens: (B, N, C) -> (B, N−P)."""
    return F.normalize(tokens[:, prefix:].pow(p).mean(dim=2), dim=1)


def test_at_on_tokens_is_the_per_token_energy_map():
    distiller = build("at", vit_spots(8), vit_spots(12))
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(5, 17, 8, generator=g) for _ in range(3)]
    teacher = [torch.randn(5, 17, 12, generator=g) for _ in range(3)]
    value = distiller(student, teacher, torch.ones(5, 3), context(5))
    expected = sum(
        (energy(s, 1) - energy(t, 1)).pow(2).mean(dim=1).mean()
        for s, t in zip(student, teacher, strict=True)
    )
    torch.testing.assert_close(value, expected)


def test_at_between_grids_pools_to_the_coarser_grid():
    # Student ViT/4 (4×4 grid) against a teacher with an 8×8 grid and two prefix tokens.
    distiller = build("at", vit_spots(8, 4), vit_spots(12, 8, prefix=2))
    g = torch.Generator().manual_seed(1)
    student = [torch.randn(3, 17, 8, generator=g) for _ in range(3)]
    teacher = [torch.randn(3, 66, 12, generator=g) for _ in range(3)]
    value = distiller(student, teacher, torch.ones(3, 3), context(3))
    pooled = [
        F.avg_pool2d(t[:, 2:].transpose(1, 2).reshape(3, 12, 8, 8), 2).flatten(2).transpose(1, 2)
        for t in teacher
    ]
    expected = sum(
        (energy(s, 1) - energy(t, 0)).pow(2).mean(dim=1).mean()
        for s, t in zip(student, pooled, strict=True)
    )
    torch.testing.assert_close(value, expected)


def test_at_between_a_cnn_map_and_tokens():
    distiller = build("at", vit_spots(8), cnn_spots())
    assert [t.name for t in distiller.teacher_spots] == ["s1", "s2", "s3"]
    g = torch.Generator().manual_seed(2)
    student = [torch.randn(2, 17, 8, generator=g) for _ in range(3)]
    teacher = [torch.randn(2, *t.shape, generator=g) for t in distiller.teacher_spots]
    value = distiller(student, teacher, torch.ones(2, 3), context(2))
    views = [s[:, 1:].transpose(1, 2).reshape(2, 8, 4, 4) for s in student]
    expected = sum(at_per_sample(s, t, 2.0).mean() for s, t in zip(views, teacher, strict=True))
    torch.testing.assert_close(value, expected)


def _at_reference(distiller, student, teacher):
    def spot(k, selected):
        s_spot, t_spot = distiller.student_spots[k], distiller.teacher_spots[k]
        s = student[k][selected]
        t = teacher[k][selected]
        if s_spot.tokens is not None:
            s = s[:, s_spot.tokens.prefix :].transpose(1, 2).reshape(len(s), s.shape[2], 4, 4)
        if t_spot.tokens is not None:
            t = t[:, t_spot.tokens.prefix :].transpose(1, 2).reshape(len(t), t.shape[2], 4, 4)
        return at_per_sample(s, t, 2.0).mean()

    return spot


def _fitnet_reference(distiller, student, teacher):
    def spot(k, selected):
        regressed = distiller.regressors[k](student[k][selected])
        return (regressed - teacher[k][selected]).pow(2).mean()

    return spot


@pytest.mark.parametrize("case", MASK_CASES)
@pytest.mark.parametrize("teacher", ["vit", "cnn"])
def test_token_at_masked_equals_sub_batch(case, teacher):
    check_gated_equals_subbatch(
        "at",
        case,
        seed=10,
        reference=_at_reference,
        student_spots=vit_spots(8),
        teacher_spots=vit_spots(12) if teacher == "vit" else cnn_spots(),
    )


@pytest.mark.parametrize("case", MASK_CASES)
@pytest.mark.parametrize("pair", ["vit-vit", "cnn-vit"])
def test_token_fitnet_masked_equals_sub_batch(case, pair):
    student = vit_spots(8) if pair == "vit-vit" else cnn_spots()
    distiller, _ = check_gated_equals_subbatch(
        "fitnet",
        case,
        seed=20,
        reference=_fitnet_reference,
        trainable=lambda d: list(d.parameters()),
        student_spots=student,
        teacher_spots=vit_spots(12),
    )
    assert distiller.teacher_spots[0].is_tokens


@pytest.mark.fault("config")
@pytest.mark.parametrize("name", ["nst", "vid", "ft", "ab", "fsp"])
def test_map_only_distillers_refuse_a_token_spot_naming_those_that_work(name):
    with pytest.raises(SakdError) as err:
        build(name, vit_spots(8), vit_spots(12))
    message = str(err.value)
    assert "\n" not in message and "token map" in message
    assert message.endswith("use one of at, cc, crd, dkd, fitnet, kd, pkt, rkd, sp")


def test_the_token_distillers_are_the_ones_named():
    assert token_distillers() == ["at", "cc", "crd", "dkd", "fitnet", "kd", "pkt", "rkd", "sp"]


@pytest.mark.parametrize("name", ["sp", "rkd", "pkt", "cc", "crd"])
def test_relational_distillers_run_on_a_vit_pair(name):
    distiller = build(name, vit_spots(8), vit_spots(12))
    spot = distiller.student_spots[0]
    assert spot.role == ("stage" if name == "sp" else "pooled")
    g = torch.Generator().manual_seed(3)
    student = [
        torch.randn(6, *s.shape, generator=g).requires_grad_() for s in distiller.student_spots
    ]
    teacher = [torch.randn(6, *t.shape, generator=g) for t in distiller.teacher_spots]
    value = distiller(student, teacher, torch.ones(6, 1), context(torch.arange(6), torch.arange(6)))
    assert torch.isfinite(value)
    value.backward()
    assert torch.isfinite(student[0].grad).all()
