"""stage_model keeps train/eval semantics, finds stages and head, and exports in the user's names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sakd.errors import SakdError
from sakd.models import create_model
from sakd.models.wrap import check_staged, find_head, find_stages, stage_model


class NoisyBlock(nn.Module):
    """A block whose forward branches on ``self.training`` (adds a random scale in training)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn(self.conv(x)))
        if self.training:
            out = out * (1 + 0.5 * torch.rand_like(out[:, :1]))
        return out


class OwnNet(nn.Module):
    """A user's net: mode-dependent blocks, BatchNorm, dropout, stochastic depth done by hand."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = NoisyBlock(3, 8, 1)
        self.body = nn.Sequential(
            nn.Sequential(NoisyBlock(8, 16, 2), NoisyBlock(16, 16, 1)),
            nn.Sequential(NoisyBlock(16, 24, 2), NoisyBlock(24, 24, 1)),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.5)
        self.classifier = nn.Linear(24, num_classes)
        self.unused = nn.Linear(3, 3)  # never called by forward: exported with its own values

    def forward(self, x: Tensor) -> Tensor:
        x = self.body(self.stem(x))
        return self.classifier(self.drop(torch.flatten(self.pool(x), 1)))


class RootBranch(OwnNet):
    """Branches on ``self.training`` in the root forward: traced once per mode."""

    def forward(self, x: Tensor) -> Tensor:
        x = self.body(self.stem(x))
        if self.training:
            x = x * 2
        return self.classifier(torch.flatten(self.pool(x), 1))


class FunctionalDropout(OwnNet):
    """``F.dropout(..., self.training)`` in the root forward: the mode is a traced constant."""

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.pool(self.body(self.stem(x))), 1)
        return self.classifier(F.dropout(x, 0.5, self.training))


def own_net() -> OwnNet:
    torch.manual_seed(0)
    net = OwnNet()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.running_mean, -0.5, 0.5)
            nn.init.uniform_(module.running_var, 0.5, 1.5)
    return net


def image(n: int = 4, size: int = 32) -> Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(5))


def seeded(fn, x: Tensor) -> Tensor:
    torch.manual_seed(11)
    return fn(x)


def test_automatic_stages_and_head() -> None:
    net = own_net()
    assert find_head(net) == "classifier"
    assert find_stages(net, "classifier", 32) == ["stem", "body.0", "body.1"]
    staged = stage_model(net, input_size=32)
    assert staged.stage_paths == ("stem", "body.0", "body.1")
    assert staged.head_path == "classifier"
    assert staged.stage_roles == ("stem", "stage", "stage", "pooled")
    assert [s.shape for s in staged.spot_info()] == [(8, 32, 32), (16, 16, 16), (24, 8, 8), (24,)]


@torch.no_grad()
def test_eval_and_train_outputs_equal_the_module() -> None:
    net = own_net()
    staged = stage_model(net, ["body.0", "body.1"], "classifier", stem="stem", input_size=32)
    x = image()
    net.eval()
    staged.eval()
    torch.testing.assert_close(staged(x), net(x), rtol=0, atol=0)
    # Eval is deterministic: the dropout and the noisy blocks are really off.
    torch.testing.assert_close(staged(x), staged(x), rtol=0, atol=0)
    net.train()
    staged.train()
    reference = seeded(net, x)
    torch.testing.assert_close(seeded(staged, x), reference, rtol=0, atol=0)
    # Train mode is really on in the staged net: another seed draws other masks.
    torch.manual_seed(12)
    assert not torch.equal(staged(x), reference)


def test_staging_leaves_the_users_module_untouched() -> None:
    net = own_net().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    stage_model(net, input_size=32)
    assert not net.training and not any(m.training for m in net.modules())
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


@torch.no_grad()
@pytest.mark.parametrize("cls", [RootBranch, FunctionalDropout])
def test_a_training_branch_above_the_cuts_switches_with_the_mode(cls) -> None:
    torch.manual_seed(0)
    net = cls()
    staged = stage_model(net, input_size=32)
    switched = [type(s).__name__ for s in staged.stages]
    assert switched.count("_ModeSwitch") == 1  # only the segment holding the branch
    x = image()
    torch.testing.assert_close(staged.eval()(x), net.eval()(x), rtol=0, atol=0)
    net.train()
    staged.train()
    reference = seeded(net, x)
    torch.testing.assert_close(seeded(staged, x), reference, rtol=0, atol=0)
    assert not torch.equal(staged.eval()(x), reference)
    # Export names are unchanged by the switch.
    cls().load_state_dict(staged.export_state_dict(), strict=True)


@torch.no_grad()
def test_a_training_branch_in_an_ancestor_of_a_cut_switches_too() -> None:
    net = own_net()
    # Cutting inside the stem traces NoisyBlock.forward, which branches on the mode.
    staged = stage_model(net, ["stem.bn", "body.0"], "classifier", input_size=32)
    x = image()
    torch.testing.assert_close(staged.eval()(x), net.eval()(x), rtol=0, atol=0)
    net.train()
    staged.train()
    torch.testing.assert_close(seeded(staged, x), seeded(net, x), rtol=0, atol=0)


@pytest.mark.fault("user-code")
def test_a_train_graph_that_cannot_be_cut_alike_is_refused_naming_the_module() -> None:
    class AuxInTraining(OwnNet):
        """Returns (logits, aux) in training, like GoogLeNet/Inception: no single head output."""

        def forward(self, x: Tensor):
            feat = torch.flatten(self.pool(self.body(self.stem(x))), 1)
            logits = self.classifier(feat)
            if self.training:
                return logits, self.unused(feat[:, :3])
            return logits

    with pytest.raises(
        SakdError,
        match="the forward of AuxInTraining branches on self.training and its train-mode graph "
        r"cannot be cut the same way \(head 'classifier' must",
    ):
        stage_model(AuxInTraining(), input_size=32)


@torch.no_grad()
def test_a_mode_switch_follows_to_and_meta_copies() -> None:
    class RootScale(OwnNet):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("scale", torch.tensor(2.0))

        def forward(self, x: Tensor) -> Tensor:
            x = torch.flatten(self.pool(self.body(self.stem(x))), 1) * self.scale
            if self.training:
                x = x + 1
            return self.classifier(x)

    net = RootScale()
    staged = stage_model(net, input_size=32)
    assert "stages.3.scale" in staged.state_dict()
    staged.to(torch.float64)
    x = image().double()
    torch.testing.assert_close(staged.eval()(x), net.double().eval()(x), rtol=0, atol=0)
    staged.load_export_state_dict({**net.state_dict(), "scale": torch.tensor(3.0).double()})
    net.scale.fill_(3.0)
    net.train()
    torch.testing.assert_close(seeded(staged.train(), x), seeded(net, x), rtol=0, atol=0)
    assert [s.shape for s in staged.spot_info()][-1] == (24,)


@pytest.mark.fault("user-code")
def test_the_construction_check_refuses_a_staged_net_that_differs() -> None:
    net = own_net()
    staged = stage_model(net, input_size=32)
    check_staged(net, staged, 32)  # passes: the same weights
    with pytest.raises(SakdError, match="does not reproduce the module's eval-mode output"):
        check_staged(OwnNet(), staged, 32)


def test_without_a_linear_output_the_head_must_be_named() -> None:
    class NoLinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.conv(x).mean(dim=(2, 3))

    with pytest.raises(SakdError, match="cannot find the head of NoLinear"):
        stage_model(NoLinear(), input_size=16)


def test_a_head_inside_a_head_module_is_found() -> None:
    class ClassifierHead(nn.Module):
        """Pool, norm, dropout and fc in one module (like timm's NormMlpClassifierHead)."""

        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(24)
            self.drop = nn.Dropout(0.1)
            self.fc = nn.Linear(24, 10)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(self.drop(self.norm(x.mean(dim=(2, 3)))))

    class WithHeadModule(OwnNet):
        def __init__(self) -> None:
            super().__init__()
            self.head = ClassifierHead()

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.body(self.stem(x)))

    net = WithHeadModule()
    assert find_head(net) == "head.fc"
    staged = stage_model(net, input_size=32)
    assert staged.head is net.head.fc
    x = image()
    with torch.no_grad():
        torch.testing.assert_close(staged.eval()(x), net.eval()(x), rtol=0, atol=0)


@pytest.mark.fault("user-code")
def test_stem_without_stages_is_refused() -> None:
    with pytest.raises(SakdError, match="give stages together with stem"):
        stage_model(own_net(), stem="stem")


@torch.no_grad()
def test_export_round_trip_loads_strictly_into_a_fresh_instance() -> None:
    net = own_net()
    staged = stage_model(net, input_size=32)
    # Train the staged net a little so its weights and BN statistics differ from any fresh init.
    staged.train()
    with torch.enable_grad():
        opt = torch.optim.SGD(staged.parameters(), lr=0.5)
        staged(image()).logsumexp(1).sum().backward()
        opt.step()
    exported = staged.export_state_dict()
    assert list(exported) == list(OwnNet().state_dict())
    assert all(v.device.type == "cpu" for v in exported.values())
    fresh = OwnNet()
    fresh.load_state_dict(exported, strict=True)
    fresh.eval()
    staged.eval()
    x = image()
    torch.testing.assert_close(fresh(x), staged(x), rtol=0, atol=0)
    assert staged.source_module is net


@torch.no_grad()
def test_load_export_state_dict_is_the_inverse_and_strict() -> None:
    teacher = OwnNet()
    torch.manual_seed(3)
    trained = OwnNet().eval()
    staged = stage_model(teacher, input_size=32)
    staged.load_export_state_dict(trained.state_dict())
    staged.eval()
    x = image()
    torch.testing.assert_close(staged(x), trained(x), rtol=0, atol=0)
    # load_weights takes either name set.
    other = stage_model(OwnNet(), input_size=32)
    other.load_weights(staged.state_dict())
    other.eval()
    torch.testing.assert_close(other(x), trained(x), rtol=0, atol=0)
    other.load_weights(trained.state_dict())
    wrong = trained.state_dict()
    wrong.pop("classifier.bias")
    with pytest.raises(SakdError, match="1 missing \\(classifier.bias\\)"):
        staged.load_export_state_dict(wrong)
    with pytest.raises(SakdError, match="wrong shape"):
        staged.load_export_state_dict(OwnNet(num_classes=5).state_dict())


def test_zoo_models_export_their_own_names() -> None:
    model = create_model("resnet8", num_classes=10)
    exported = model.export_state_dict()
    assert exported.keys() == model.state_dict().keys()
    fresh = create_model("resnet8", num_classes=10)
    fresh.load_export_state_dict(exported)


def test_user_factory_by_name_with_automatic_stages() -> None:
    staged = create_model(f"{__name__}:OwnNet", num_classes=7, input_size=32)
    assert staged.stage_paths == ("stem", "body.0", "body.1")
    assert staged.head.out_features == 7
    with pytest.raises(SakdError, match="cannot import model factory 'no_such_pkg.nets:net'"):
        create_model("no_such_pkg.nets:net")


def test_external_models_need_the_extra() -> None:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(SakdError, match=r"pip install sakd\[vision\]"):
            create_model("torchvision:resnet18", num_classes=10)
    else:
        pytest.skip("torchvision is installed: tests/vision covers it")
