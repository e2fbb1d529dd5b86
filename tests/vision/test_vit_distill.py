"""Spot-adaptive distillation on vision transformers: timm ViT / DeiT and torchvision's ViT.

Tiny random transformers (depth 4, 32×32 images, patch 8: a 4×4 grid and a class token) so every
mode and every distiller that runs on token maps takes a real step on the CPU in seconds.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

import sakd  # noqa: E402
from sakd.cli import main  # noqa: E402
from sakd.errors import SakdError  # noqa: E402
from sakd.models import create_model  # noqa: E402
from sakd.models.tokens import TokenLayout  # noqa: E402
from sakd.models.wrap import stage_model  # noqa: E402
from sakd.spots import build_selector  # noqa: E402

from ..conftest import tiny_overrides  # noqa: E402
from .test_api_vision import Noise  # noqa: E402

pytestmark = pytest.mark.vision

MODES = ("fixed", "random", "adaptive", "anti")
TOKEN_DISTILLERS = ("at", "fitnet", "sp", "rkd", "pkt", "crd", "cc", "kd", "dkd")


def timm_vit(dim: int, seed: int = 0, arch: str = "vit_tiny_patch16_224"):
    torch.manual_seed(seed)
    return timm.create_model(
        arch, img_size=32, patch_size=8, depth=4, embed_dim=dim, num_heads=2, num_classes=4
    )


def torchvision_vit(dim: int, seed: int = 0):
    torch.manual_seed(seed)
    return torchvision.models.VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=4,
        num_heads=2,
        hidden_dim=dim,
        mlp_dim=2 * dim,
        num_classes=4,
    )


def resnet(seed: int = 0):
    torch.manual_seed(seed)
    return torchvision.models.resnet18(num_classes=4)


def distil(tmp_path, teacher, student, distiller: str, mode: str, **options):
    return sakd.distill(
        teacher,
        student,
        Noise(8, 0),
        Noise(4, 1),
        distiller=distiller,
        mode=mode,
        epochs=1,
        batch_size=8,
        progress=False,
        output_dir=str(tmp_path / f"{distiller}-{mode}"),
        **options,
    )


def records(run) -> list[dict]:
    return [
        json.loads(line) for line in (run.output_dir / "metrics.jsonl").read_text().splitlines()
    ]


@pytest.mark.parametrize("make", [timm_vit, torchvision_vit], ids=["timm", "torchvision"])
def test_vits_are_staged_at_quarter_depth_blocks_with_token_spots(make):
    net = make(32)
    staged = stage_model(net, input_size=32)
    assert len(staged.stage_paths) == 4 and staged.stage_roles == ("stage",) * 4 + ("pooled",)
    infos = staged.spot_info()
    assert [i.shape for i in infos] == [(17, 32)] * 4 + [(32,)]
    assert all(i.tokens == TokenLayout(1, (4, 4)) for i in infos[:4])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(staged.eval()(x), net.eval()(x))


def test_deit_tiny_at_224_by_name():
    staged = create_model("timm:deit_tiny_patch16_224", num_classes=10, input_size=224)
    assert staged.stage_paths == ("blocks.2", "blocks.5", "blocks.8", "blocks.11")
    assert staged.spot_info()[0].shape == (197, 192)
    assert staged.spot_info()[0].tokens == TokenLayout(1, (14, 14))


@pytest.mark.parametrize(
    ("make_student", "make_teacher"),
    [
        (lambda: timm_vit(32, 0), lambda: timm_vit(48, 1)),
        (lambda: timm_vit(32, 0), lambda: resnet(1)),
        (lambda: resnet(0), lambda: timm_vit(48, 1)),
        (lambda: torchvision_vit(32, 0), lambda: timm_vit(48, 1)),
    ],
    ids=["vit-vit", "resnet-to-vit", "vit-to-resnet", "timm-to-torchvision"],
)
def test_all_teacher_decisions_give_the_teacher_logits(make_student, make_teacher):
    student = stage_model(make_student(), input_size=32)
    teacher = stage_model(make_teacher(), input_size=32).eval().requires_grad_(False)
    s_idx = [i for i, s in enumerate(student.spot_info()) if s.role == "stage"][:3]
    t_idx = [i for i, s in enumerate(teacher.spot_info()) if s.role == "stage"][:3]
    selector = build_selector(
        "adaptive", student, teacher, s_idx, input_size=32, teacher_spot_indices=t_idx
    )
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = teacher(images)
    torch.testing.assert_close(
        selector.routed(images, torch.ones(4, 4)), expected, rtol=1e-6, atol=1e-6
    )
    student.eval()
    with torch.no_grad():
        own = student(images)
    torch.testing.assert_close(
        selector.routed(images, torch.zeros(4, 4)), own, rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("distiller", ["at", "fitnet"])
def test_vit_to_vit_every_mode(tmp_path, mode, distiller):
    run = distil(tmp_path, timm_vit(48, 1), timm_vit(32, 0), distiller, mode)
    (record,) = records(run)
    names = list(record["spot_rates"])
    assert names[-1] == "logits" and all(n.startswith("blocks.") for n in names[:-1])
    assert all(value == value for value in record["losses"].values())  # no NaN


@pytest.mark.parametrize("distiller", TOKEN_DISTILLERS)
def test_every_token_distiller_takes_an_adaptive_step_vit_to_vit(tmp_path, distiller):
    run = distil(tmp_path, timm_vit(48, 1), timm_vit(32, 0), distiller, "adaptive")
    (record,) = records(run)
    assert "routing" in record["losses"]


@pytest.mark.parametrize("distiller", TOKEN_DISTILLERS)
def test_every_token_distiller_takes_an_adaptive_step_resnet_to_vit(tmp_path, distiller):
    run = distil(tmp_path, resnet(1), timm_vit(32, 0), distiller, "adaptive")
    (record,) = records(run)
    assert "routing" in record["losses"]


@pytest.mark.parametrize("mode", MODES)
def test_resnet_to_vit_every_mode_with_at(tmp_path, mode):
    run = distil(tmp_path, resnet(1), timm_vit(32, 0), "at", mode)
    (record,) = records(run)
    assert list(record["spot_rates"]) == ["blocks.0", "blocks.1", "blocks.2", "logits"]


@pytest.mark.parametrize("distiller", ["at", "fitnet"])
def test_vit_to_resnet_and_torchvision_students(tmp_path, distiller):
    distil(tmp_path / "r", timm_vit(48, 1), resnet(0), distiller, "adaptive")
    distil(tmp_path / "t", timm_vit(48, 1), torchvision_vit(32, 0), distiller, "adaptive")


def test_logit_standardisation_on_a_vit_pair(tmp_path):
    distil(
        tmp_path,
        timm_vit(48, 1),
        timm_vit(32, 0),
        "kd",
        "adaptive",
        params={"logit_standardization": True},
    )


def test_spots_by_name_on_both_sides(tmp_path):
    run = distil(
        tmp_path,
        timm_vit(48, 1),
        timm_vit(32, 0),
        "at",
        "adaptive",
        student_spots=["blocks.1", "blocks.3"],
        teacher_spots=["blocks.0", "blocks.2"],
    )
    (record,) = records(run)
    assert list(record["spot_rates"]) == ["blocks.1", "blocks.3", "logits"]


@pytest.mark.parametrize("distiller", ["nst", "vid", "ft", "ab", "fsp"])
def test_map_only_distillers_refuse_with_one_line(tmp_path, distiller):
    with pytest.raises(SakdError) as err:
        distil(tmp_path, timm_vit(48, 1), timm_vit(32, 0), distiller, "adaptive")
    assert "\n" not in str(err.value)
    assert str(err.value).endswith("use one of at, cc, crd, dkd, fitnet, kd, pkt, rkd, sp")
    assert not (tmp_path / f"{distiller}-adaptive").exists()


TINY_VITS = textwrap.dedent(
    """
    import timm


    def vit(num_classes=10, dim=32, seed=0):
        import torch

        torch.manual_seed(seed)
        return timm.create_model(
            "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=4, embed_dim=dim,
            num_heads=2, num_classes=num_classes,
        )


    def teacher(num_classes=10):
        return vit(num_classes, dim=48, seed=1)
    """
)


def test_cli_distil_inspect_and_export_in_timms_own_names(tmp_path, monkeypatch, capsys):
    (tmp_path / "tiny_vits.py").write_text(TINY_VITS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import tiny_vits

    checkpoint = tmp_path / "teacher.pt"
    torch.save(tiny_vits.teacher().state_dict(), checkpoint)
    run = tmp_path / "run"
    overrides = tiny_overrides(
        run,
        "epochs=1",
        "model.name=tiny_vits:vit",
        "teacher.name=tiny_vits:teacher",
        f"teacher.checkpoint={checkpoint}",
        "distiller.name=at",
        "spots.mode=adaptive",
        "spots.homogeneous=false",
    )
    assert main(["distill", "quickstart", *overrides]) == 0
    assert main(["inspect", str(run), "--split", "test", "--trust-code"]) == 0
    header = (run / "inspect" / "decisions.csv").read_text().splitlines()[0]
    for block in ("blocks.0", "blocks.1", "blocks.2", "blocks.3", "logits"):
        assert f"p_teacher_{block}" in header
    out = tmp_path / "student.pt"
    assert (
        main(["export", str(run), "--out", str(out), "--checkpoint", "last", "--trust-code"]) == 0
    )
    fresh = tiny_vits.vit()
    fresh.load_state_dict(torch.load(out, weights_only=True), strict=True)
    spots = json.loads((run / "run.json").read_text())["spots"]
    assert [s["name"] for s in spots] == ["blocks.0", "blocks.1", "blocks.2", "blocks.3", "logits"]
    capsys.readouterr()
