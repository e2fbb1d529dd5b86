"""Runtime choices: 'auto' precision and memory format, compilation, sharded evaluation."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from torch import nn

from sakd.config import validate_config
from sakd.data import AugmentSpec, ImageSet
from sakd.engine import evaluate as evaluate_module
from sakd.engine.checkpoint import load_checkpoint
from sakd.engine.run import run
from sakd.engine.runtime import Runtime
from sakd.models import create_model


@pytest.mark.parametrize(
    ("cuda", "bf16_supported", "device", "expected"),
    [
        (False, False, "auto", ("cpu", False, False)),
        (True, True, "auto", ("cuda", True, True)),
        (True, False, "cuda", ("cuda", False, True)),
        (True, True, "cpu", ("cpu", False, False)),
    ],
)
def test_auto_means_bf16_and_channels_last_on_cuda_only(
    monkeypatch, cuda, bf16_supported, device, expected
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    runtime = Runtime.create(device, "auto", "auto")
    assert (runtime.device.type, runtime.bf16, runtime.channels_last) == expected
    assert runtime.precision == ("bf16" if expected[1] else "fp32")


def test_explicit_settings_win_over_auto(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    runtime = Runtime.create("cuda", "fp32", False)
    assert not runtime.bf16 and not runtime.channels_last
    cpu = Runtime.create("cpu", "bf16", True)
    assert cpu.bf16 and cpu.channels_last and cpu.world_size == 1 and cpu.rank == 0


def _tiny(out, **changes) -> dict:
    config = {
        "output_dir": str(out),
        "epochs": 1,
        "batch_size": 16,
        "eval_batch_size": 16,
        "device": "cpu",
        "progress": False,
        "data": {"name": "embedded", "train_limit": 32, "test_limit": 16},
        "model": {"name": "resnet8"},
    }
    config.update(changes)
    return config


def test_run_json_records_what_was_used(tmp_path):
    run(validate_config(_tiny(tmp_path / "r")))
    facts = json.loads((tmp_path / "r" / "run.json").read_text())
    assert facts["precision"] == "fp32" and facts["channels_last"] is False
    assert facts["compile"] is False and facts["data_on_device"] is True
    assert facts["world_size"] == 1 and facts["global_batch_size"] == 16
    assert facts["lr_scaling"] == "linear" and facts["lr_scale"] == 1


def test_compile_runs_the_student_through_torch_compile(tmp_path, monkeypatch):
    compiled: dict[str, int] = {}
    original = torch.compile

    def compile_eagerly(fn):
        inner = original(fn, backend="eager")
        compiled[fn.__name__] = 0

        @functools.wraps(fn)
        def counted(*args, **kwargs):
            compiled[fn.__name__] += 1
            return inner(*args, **kwargs)

        return counted

    monkeypatch.setattr(torch, "compile", compile_eagerly)
    summary = run(validate_config(_tiny(tmp_path / "c", compile=True)))
    assert summary.last_top1 == summary.last_top1  # a number, not NaN
    # Training alone calls forward (2 steps), so does evaluation (1 batch); distillation steps
    # call forward_features.
    assert compiled == {"forward": 3, "forward_features": 0}
    state = load_checkpoint(tmp_path / "c" / "checkpoints" / "last.pt")["modules"]["student"]
    assert state.keys() == create_model("resnet8", num_classes=10).state_dict().keys()
    assert json.loads((tmp_path / "c" / "run.json").read_text())["compile"] is True


class _Linear(nn.Module):
    """A fixed random classifier of flattened images."""

    def __init__(self, in_features: int, classes: int) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.fc = nn.Linear(in_features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.mark.parametrize(("world_size", "batch_size"), [(2, 4), (3, 5), (4, 16)])
def test_sharded_evaluation_counts_every_sample_once(monkeypatch, world_size, batch_size):
    generator = torch.Generator().manual_seed(0)
    data = ImageSet(
        images=torch.randint(0, 256, (37, 3, 4, 4), dtype=torch.uint8, generator=generator),
        labels=torch.randint(0, 6, (37,), generator=generator),
        num_classes=6,
        class_names=[str(i) for i in range(6)],
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        augment=AugmentSpec(),
    )
    model = _Linear(48, 6)
    single = evaluate_module.accuracy(model, data, Runtime(torch.device("cpu")), batch_size)
    shards: list[torch.Tensor] = []
    monkeypatch.setattr(evaluate_module, "all_reduce_", lambda t: shards.append(t.clone()) or t)
    for rank in range(world_size):
        runtime = Runtime(torch.device("cpu"), rank=rank, world_size=world_size)
        evaluate_module.accuracy(model, data, runtime, batch_size)
    top1, top5, total = torch.stack(shards).sum(0).tolist()
    assert total == 37
    assert (100.0 * top1 / total, 100.0 * top5 / total) == pytest.approx(single)
