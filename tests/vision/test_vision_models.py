"""torchvision and timm models staged with eval and train equality (needs ``sakd[vision]``).

Run by ``make test-vision`` in its own venv (torch 2.14.1, torchvision 0.29.1, timm); the main
suite skips this file where torchvision or timm is missing.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

from sakd.errors import SakdError  # noqa: E402
from sakd.models import create_model  # noqa: E402
from sakd.models.wrap import stage_model  # noqa: E402

pytestmark = pytest.mark.vision

SIZE = 64


def image(n: int = 4, size: int = SIZE) -> Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def seeded(fn, x: Tensor, seed: int = 7) -> Tensor:
    torch.manual_seed(seed)
    return fn(x)


def assert_same_semantics(module: nn.Module, staged: nn.Module) -> None:
    """Eval output == the module's (and deterministic); train output == the module's, same seed."""
    x = image()
    with torch.no_grad():
        module.eval()
        staged.eval()
        expected = module(x)
        outs = [staged(x) for _ in range(3)]
        for out in outs:
            torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
        module.train()
        staged.train()
        torch.testing.assert_close(seeded(staged, x), seeded(module, x), rtol=1e-5, atol=1e-6)


CASES = {
    "torchvision:resnet18": ("relu", "layer1", "layer2", "layer3", "layer4"),
    "torchvision:resnet34": ("relu", "layer1", "layer2", "layer3", "layer4"),
    "torchvision:mobilenet_v3_small": (
        "features.0",
        "features.1",
        "features.3",
        "features.8",
        "features.12",
    ),
    "torchvision:efficientnet_b0": (
        "features.1",
        "features.2",
        "features.3",
        "features.5",
        "features.8",
    ),
    "timm:efficientnet_b0": ("blocks.0", "blocks.1", "blocks.2", "blocks.4", "bn2"),
    "timm:mobilenetv3_small_100": ("bn1", "blocks.0", "blocks.1", "blocks.3", "blocks.5"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_staged_by_name_keeps_eval_and_train_semantics(name: str) -> None:
    staged = create_model(name, num_classes=10, input_size=SIZE)
    assert staged.stage_paths == CASES[name]
    assert staged.stage_roles == ("stem", "stage", "stage", "stage", "stage", "pooled")
    assert [s.reduction for s in staged.spot_info()[:-1]] == [2, 4, 8, 16, 32]
    assert staged.head.out_features == 10
    assert_same_semantics(staged.source_module, staged)


def test_stochastic_depth_and_drop_rate_follow_the_mode() -> None:
    # The symptom: torchvision efficientnet_b0 gave 5 outputs for 5 eval passes.
    net = torchvision.models.efficientnet_b0(num_classes=10, stochastic_depth_prob=0.5)
    assert_same_semantics(net, stage_model(net, input_size=SIZE))
    net = timm.create_model("efficientnet_b0", num_classes=10, drop_path_rate=0.3)
    assert_same_semantics(net, stage_model(net, input_size=SIZE))
    # timm's classifier dropout is an F.dropout on self.training in the root forward: the pooled
    # segment is traced once per mode and switches with it.
    for arch in ("mobilenetv3_small_100", "efficientnet_b0"):
        net = timm.create_model(arch, num_classes=10, drop_rate=0.5)
        staged = stage_model(net, input_size=SIZE)
        assert type(staged.stages[-1]).__name__ == "_ModeSwitch"
        assert_same_semantics(net, staged)
        x = image()
        with torch.no_grad():
            assert not torch.equal(seeded(staged.train(), x), staged.eval()(x))


def test_resnet34_and_resnet18_spots_pair_up() -> None:
    teacher = create_model("torchvision:resnet34", num_classes=10, input_size=SIZE)
    student = create_model("torchvision:resnet18", num_classes=10, input_size=SIZE)
    assert [s.shape for s in teacher.spot_info()] == [s.shape for s in student.spot_info()]


@pytest.mark.parametrize("name", ["torchvision:resnet18", "timm:mobilenetv3_small_100"])
def test_export_gives_the_librarys_own_names(name: str) -> None:
    staged = create_model(name, num_classes=10, input_size=SIZE)
    library, _, arch = name.partition(":")
    if library == "torchvision":
        fresh = torchvision.models.get_model(arch, num_classes=10)
    else:
        fresh = timm.create_model(arch, num_classes=10)
    fresh.load_state_dict(staged.export_state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(image()), staged.eval()(image()))


@pytest.mark.parametrize("name", ["torchvision:resnet18", "timm:efficientnet_b0"])
def test_pretrained_from_a_local_file(tmp_path, name: str) -> None:
    library, _, arch = name.partition(":")
    torch.manual_seed(0)
    if library == "torchvision":
        source = torchvision.models.get_model(arch)  # 1000 classes, like the published weights
    else:
        source = timm.create_model(arch)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    same = create_model(name, num_classes=1000, pretrained=str(path), input_size=SIZE)
    exported = same.export_state_dict()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(exported[key], value, rtol=0, atol=0)
    # Another number of classes: everything but the head comes from the file.
    fewer = create_model(name, num_classes=10, pretrained=str(path), input_size=SIZE)
    exported = fewer.export_state_dict()
    head = fewer.head_path + "."
    for key, value in source.state_dict().items():
        if not key.startswith(head):
            torch.testing.assert_close(exported[key], value, rtol=0, atol=0)
    assert exported[head + "weight"].shape[0] == 10
    with pytest.raises(SakdError, match="does not exist"):
        create_model(name, num_classes=10, pretrained=str(tmp_path / "missing.pth"))


def test_pretrained_true_without_a_cache_is_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(SakdError, match="not in the torch hub cache"):
        create_model("torchvision:resnet18", num_classes=10, pretrained=True)


def test_cached_torchvision_weights_are_used(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.get_model_weights("resnet18").DEFAULT
    torch.manual_seed(2)
    source = torchvision.models.resnet18()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(source.state_dict(), cache / weights.url.rsplit("/", 1)[-1])
    staged = create_model("torchvision:resnet18", num_classes=10, pretrained=True, input_size=SIZE)
    torch.testing.assert_close(staged.source_module.conv1.weight, source.conv1.weight)
    assert staged.head.out_features == 10


def test_unknown_names_are_one_line() -> None:
    with pytest.raises(SakdError, match="unknown torchvision model 'resnet9000'"):
        create_model("torchvision:resnet9000")
    with pytest.raises(SakdError, match="unknown timm model 'nope_net'"):
        create_model("timm:nope_net")
