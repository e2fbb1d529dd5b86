"""Runs on streamed data: exact resume, the data config, and the ImageNet recipes end to end."""

from __future__ import annotations

import json

import pytest
import torch

from sakd.config import load_config
from sakd.engine.build import load_data
from sakd.engine.checkpoint import load_checkpoint
from sakd.engine.run import run
from sakd.errors import SakdError

from ..conftest import stop_after_saves

pytestmark = pytest.mark.xdist_group("stream-runs")


@pytest.fixture
def tree(tmp_path, formats):
    return formats.write_image_tree(tmp_path / "tree", classes=3, train=6, val=2)


def stream_overrides(out, tree, *extra):
    return [
        f"output_dir={out}",
        "data.name=folder",
        f"data.root={tree}",
        "data.loader=stream",
        "data.image_size=16",
        "data.workers=1",
        "epochs=2",
        "batch_size=4",
        "precision=fp32",
        "channels_last=false",
        "device=cpu",
        "progress=false",
        *extra,
    ]


@pytest.mark.fault("interrupted")
def test_resumed_streaming_run_equals_uninterrupted_run(tmp_path, tree, monkeypatch):
    straight = tmp_path / "straight"
    resumed = tmp_path / "resumed"
    run(load_config("quickstart/student", stream_overrides(straight, tree)))
    stop_after_saves(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(load_config("quickstart/student", stream_overrides(resumed, tree)))
    monkeypatch.undo()
    run(load_config("quickstart/student", stream_overrides(resumed, tree)))
    a = load_checkpoint(straight / "checkpoints/last.pt")["modules"]["student"]
    b = load_checkpoint(resumed / "checkpoints/last.pt")["modules"]["student"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    records = [json.loads(x) for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    info = json.loads((straight / "run.json").read_text())
    assert info["data_loader"] == "stream" and info["train_size"] == 18


def test_data_config_chooses_the_loader(tmp_path, tree):
    memory = load_config(
        "quickstart/student", [f"data.root={tree}", "data.name=folder", "data.image_size=16"]
    )
    train, test = load_data(memory)
    assert type(train).__name__ == "ImageSet" and train.image_size == (16, 16)
    custom = load_config(
        "quickstart/student",
        [
            f"data.root={tree}",
            "data.name=folder",
            "data.mean=[0.5,0.5,0.5]",
            "data.std=[0.25,0.25,0.25]",
            "data.train_limit=5",
        ],
    )
    train, _ = load_data(custom)
    assert train.mean == (0.5, 0.5, 0.5) and train.std == (0.25, 0.25, 0.25) and len(train) == 5
    streamed = load_config(
        "quickstart/student",
        [
            f"data.root={tree}",
            "data.name=folder",
            "data.loader=stream",
            "data.test_limit=4",
            "data.augment=false",
        ],
    )
    train, test = load_data(streamed)
    assert type(train).__name__ == "StreamSet" and train.image_size == (224, 224)
    assert train.train_transform == train.eval_transform and len(test) == 4


@pytest.mark.fault("config")
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.loader=disk", "data.loader"),
        ("data.mean=[123.7,116.3,103.5]", "0-1 scale"),
        ("data.std=[0.2,0.2]", "data.std"),
        ("data.crop_scale=[0.9,0.1]", "crop_scale"),
        ("data.workers=-1", "data.workers"),
        ("data.crop_fraction=0", "data.crop_fraction"),
    ],
)
def test_bad_data_settings_are_one_clear_error(override, message):
    with pytest.raises(SakdError, match=message):
        load_config("quickstart/student", [override])


@pytest.mark.fault("config")
def test_streaming_a_memory_dataset_is_refused():
    cfg = load_config("quickstart/student", ["data.loader=stream"])
    with pytest.raises(SakdError, match="cannot be streamed"):
        load_data(cfg)


@pytest.mark.fault("config")
def test_imagenet_in_memory_is_refused(tree):
    cfg = load_config("imagenet/train/resnet18", [f"data.root={tree}", "data.loader=memory"])
    with pytest.raises(SakdError, match="data.loader=stream"):
        load_data(cfg)


def test_imagenet_recipes_run_end_to_end_on_a_tiny_jpeg_tree(tmp_path, tree):
    """Teacher 1 epoch, then adaptive AT distillation 1 epoch, at 32 px, through the recipes."""
    small = [
        f"data.root={tree}",
        "data.image_size=32",
        "data.workers=0",
        "epochs=1",
        "batch_size=6",
        "eval_batch_size=6",
        "device=cpu",
        "precision=fp32",
        "channels_last=false",
        "progress=false",
    ]
    protocol = load_config("imagenet/resnet34-resnet18", [f"data.root={tree}"])
    assert protocol.data.loader == "stream" and protocol.data.image_size == 224
    assert (protocol.epochs, protocol.batch_size, protocol.lr) == (100, 256, 0.1)
    assert protocol.optimizer.weight_decay == 1e-4
    assert protocol.schedule.milestones == [30, 60, 90]
    # lr 0.01: a random 3-class teacher and AT's beta of 1000 on 1x1 maps diverge at 0.1.
    small.append("lr=0.01")
    teacher_dir = tmp_path / "teacher"
    run(load_config("imagenet/train/resnet34", [*small, f"output_dir={teacher_dir}"]))
    teacher = load_checkpoint(teacher_dir / "checkpoints/best.pt")["modules"]["student"]
    assert "layer4.2.conv2.weight" in teacher and "fc.weight" in teacher  # torchvision's names
    student_dir = tmp_path / "student"
    cfg = load_config(
        "imagenet/resnet34-resnet18",
        [
            *small,
            f"output_dir={student_dir}",
            f"teacher.checkpoint={teacher_dir / 'checkpoints/best.pt'}",
            "distiller.name=at",
            "spots.mode=adaptive",
        ],
    )
    assert cfg.model.name == "resnet18_imagenet" and cfg.teacher.name == "resnet34_imagenet"
    summary = run(cfg)
    info = json.loads((student_dir / "run.json").read_text())
    assert info["data_loader"] == "stream" and info["num_classes"] == 3
    assert 0 <= summary.last_top1 <= 100 and "teacher_top1" in info
    record = json.loads((student_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 1 and "at" in record["losses"]


class EmbeddedItems(torch.utils.data.Dataset):
    """The first ``count`` embedded images as (uint8 tensor, int) items, torchvision-style."""

    def __init__(self, train: bool, count: int):
        from sakd.data import load_dataset

        split = load_dataset("embedded", None, train=train).subset(count)
        self.images, self.targets = split.images, split.labels.tolist()

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return self.images[index], self.targets[index]


def test_a_streamed_torch_dataset_distils_through_the_engine_with_crd(tmp_path):
    from sakd.data import from_dataset

    train, test = from_dataset(
        EmbeddedItems(True, 40), EmbeddedItems(False, 20), loader="stream", workers=1
    )
    assert train.num_classes == 10 and train.image_size == (32, 32)
    cfg = load_config(
        "quickstart",
        [
            f"output_dir={tmp_path / 'crd'}",
            "distiller.name=crd",
            "distiller.params.num_negatives=16",
            "epochs=1",
            "batch_size=8",
            "precision=fp32",
            "channels_last=false",
            "device=cpu",
            "progress=false",
        ],
    )
    summary = run(cfg, data=(train, test))
    info = json.loads((tmp_path / "crd" / "run.json").read_text())
    assert info["data_loader"] == "stream" and info["train_size"] == 40
    assert info["test_size"] == 20 and 0 <= summary.last_top1 <= 100
    record = json.loads((tmp_path / "crd" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "crd" in record["losses"]
