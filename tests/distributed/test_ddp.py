"""Data-parallel training for real: two gloo processes started by torchrun on the CPU.

One ``torchrun`` launch (module fixture) runs three jobs through ``sakd.cli.main`` on two ranks:

* ``crd``: CRD at fixed spots, 2 × 8 images per step, lr 0.05 scaled linearly to 0.1;
* ``train``: the student alone, same batches;
* ``adaptive``: AT spot-adaptively with a BatchNorm student, interrupted after its first epoch;
* ``ab``: AB with its pre-training phase, where the student's head gets no gradient, then the main
  phase, where AB's connectors get none;
* ``bad``: an ``output_dir`` that is a file, which rank 0 finds: both ranks must exit with status 2.

The first two use resnet8 without BatchNorm, whose outputs are per sample: a step on two shards
of 8 is then the step of one process on their union of 16 (sharding interleaves positions, CRD's
negatives and memory update are drawn and applied for the global batch), so the two-rank runs
must match single-process runs with batch 16 and lr 0.1 up to float rounding (sums reduced in
another order). BatchNorm in train mode normalises each rank's batch with its own statistics, so
the adaptive job is compared across ranks, not with a single process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from sakd.config import validate_config
from sakd.engine.checkpoint import load_checkpoint
from sakd.engine.run import run
from sakd.models import create_model

WORKER = Path(__file__).with_name("ddp_worker.py")
NUM_CLASSES = 10  # the embedded dataset


pytestmark = pytest.mark.xdist_group("ddp")


@pytest.fixture
def test_models():
    """Register the worker's test-only models for one test, then remove them from the registry."""
    from sakd.models import registry

    before = set(registry._MODELS)
    _worker_module().register_test_models()
    yield
    for name in set(registry._MODELS) - before:
        del registry._MODELS[name]


def _worker_module():
    spec = importlib.util.spec_from_file_location("sakd_tests_ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _base(out: Path, **changes) -> dict:
    config = {
        "output_dir": str(out),
        "seed": 0,
        "epochs": 2,
        "batch_size": 8,
        "eval_batch_size": 16,
        "lr": 0.05,
        "device": "cpu",
        "precision": "fp32",
        "channels_last": False,
        "progress": False,
        # 37 test images: two shards of 19, the second padded with image 0 again.
        "data": {"name": "embedded", "train_limit": 64, "test_limit": 37},
        "model": {"name": "resnet8_nobn"},
    }
    config.update(changes)
    return config


def _distill(out: Path, teacher: Path, **changes) -> dict:
    defaults = {
        "teacher": {"name": "resnet8", "checkpoint": str(teacher)},
        "distiller": {"name": "crd", "params": {"num_negatives": 32, "feat_dim": 16}},
    }
    return _base(out, **{**defaults, **changes})


def _single_process(config: dict) -> dict:
    """The two-rank job's config for one process with the same global batch and learning rate."""
    return {**config, "batch_size": 2 * config["batch_size"], "lr": 2 * config["lr"]}


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    """Run the three jobs on two ranks; returns their folders and configs."""
    root = tmp_path_factory.mktemp("ddp")
    torch.manual_seed(0)
    teacher = root / "teacher.pt"
    torch.save({"model": create_model("resnet8", num_classes=NUM_CLASSES).state_dict()}, teacher)
    jobs = {
        "crd": ("distill", _distill(root / "crd", teacher), None),
        "train": ("train", _base(root / "train", epochs=1), None),
        # Issue 21's knobs on two ranks, with BN: the EMA's statistics must agree across ranks.
        "knobs": (
            "train",
            _base(
                root / "knobs",
                epochs=1,
                lr=0.002,
                model={"name": "resnet8"},
                optimizer={"name": "adamw", "clip_grad_norm": 1.0},
                schedule={"name": "cosine", "warmup_epochs": 0.5},
                loss={"label_smoothing": 0.1},
                ema={"decay": 0.5},
            ),
            None,
        ),
        "adaptive": (
            "distill",
            _distill(
                root / "adaptive",
                teacher,
                model={"name": "resnet8"},
                distiller={"name": "at"},
                spots={"mode": "adaptive", "homogeneous": True},
            ),
            1,
        ),
        "ab": (
            "distill",
            _distill(
                root / "ab",
                teacher,
                epochs=1,
                model={"name": "resnet8"},
                distiller={"name": "ab", "params": {"pretrain_epochs": 1}},
            ),
            None,
        ),
    }
    spec = []
    for name, (command, config, stop) in jobs.items():
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        spec.append({"command": command, "config": str(path), "stop_after_epochs": stop})
    (root / "a-file").write_text("")
    (root / "bad.yaml").write_text(yaml.safe_dump(_base(root / "a-file")))
    spec.append({"command": "train", "config": str(root / "bad.yaml"), "expected_status": 2})
    (root / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(WORKER),
            str(root / "spec.json"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # The bad job: one line from each rank, rank 0's message on both.
    # The ranks share stderr, so their lines may interleave: count messages, not lines.
    errors = result.stderr.count("sakd: error:")
    assert errors == 2 and result.stderr.count("is a file: choose a folder path") == 2, (
        result.stderr
    )
    return root, {name: config for name, (_, config, _) in jobs.items()}


def _rank_states(folder: Path) -> list[dict]:
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("job", ["crd", "train", "adaptive", "ab", "knobs"])
def test_ranks_end_with_identical_weights(launch, job):
    root, _ = launch
    first, second = _rank_states(root / job)
    assert first.keys() == second.keys()
    assert ("ema" in first) is (job == "knobs")
    for module in first:
        for key, value in first[module].items():
            assert torch.equal(value, second[module][key]), (module, key)
    if job == "adaptive":
        # The policy and both adaptor lists are part of what is compared.
        keys = set(first["selector"])
        assert any(k.startswith("policy.") for k in keys)
        assert any(k.startswith("s2t.") for k in keys) and any(k.startswith("t2s.") for k in keys)


def _assert_same_run(two_ranks: Path, single: Path) -> None:
    a = load_checkpoint(two_ranks / "checkpoints" / "last.pt")
    b = load_checkpoint(single / "checkpoints" / "last.pt")
    assert a["modules"].keys() == b["modules"].keys()
    for module, state in a["modules"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                torch.testing.assert_close(
                    value, b["modules"][module][key], rtol=1e-3, atol=3e-4, msg=f"{module}.{key}"
                )
            elif isinstance(value, torch.Tensor):
                assert torch.equal(value, b["modules"][module][key]), (module, key)
    records_a, records_b = _records(two_ranks), _records(single)
    assert len(records_a) == len(records_b)
    for ra, rb in zip(records_a, records_b, strict=True):
        assert ra["lrs"] == pytest.approx(rb["lrs"])
        assert ra["losses"] == pytest.approx(rb["losses"], rel=1e-4)
        assert ra["test_top1"] == pytest.approx(rb["test_top1"])


@pytest.mark.usefixtures("test_models")
def test_crd_on_two_ranks_matches_one_process_with_the_global_batch(launch, tmp_path):
    root, configs = launch
    single = _single_process({**configs["crd"], "output_dir": str(tmp_path / "single")})
    run(validate_config(single))
    _assert_same_run(root / "crd", tmp_path / "single")
    crd = load_checkpoint(root / "crd" / "checkpoints" / "last.pt")["modules"]["distiller"]
    assert (crd["normalizers"] > 0).all()


@pytest.mark.usefixtures("test_models")
def test_training_alone_on_two_ranks_matches_one_process(launch, tmp_path):
    root, configs = launch
    run(validate_config(_single_process({**configs["train"], "output_dir": str(tmp_path / "s")})))
    _assert_same_run(root / "train", tmp_path / "s")


def test_phases_with_parameters_left_unused_run_on_two_ranks(launch):
    root, _ = launch
    pretrain = [json.loads(x) for x in (root / "ab" / "pretrain.jsonl").read_text().splitlines()]
    assert len(pretrain) == 1 and "pretrain_ab" in pretrain[0]["losses"]
    assert [r["epoch"] for r in _records(root / "ab")] == [1]


def test_rank_zero_writes_the_run_folder_once(launch):
    root, configs = launch
    facts = json.loads((root / "crd" / "run.json").read_text())
    assert facts["world_size"] == 2 and facts["global_batch_size"] == 16
    assert facts["lr_scale"] == 2 and facts["precision"] == "fp32"
    records = _records(root / "crd")
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0]["lrs"]["student"] == pytest.approx(2 * configs["crd"]["lr"])
    assert (root / "crd" / "summary.json").is_file()
    assert (root / "crd" / "checkpoints" / "best.pt.sha256").is_file()


def test_a_two_rank_run_resumes_on_one_process(launch):
    root, configs = launch
    folder = root / "adaptive"
    interrupted = load_checkpoint(folder / "checkpoints" / "last.pt")
    assert interrupted["epoch"] == 1 and len(_records(folder)) == 1
    first = _records(folder)[0]
    assert first["lrs"]["student"] == pytest.approx(2 * configs["adaptive"]["lr"])
    assert len(first["spot_rates"]) == 4
    run(validate_config(configs["adaptive"]))
    records = _records(folder)
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0] == first
    # One rank now: the learning rate is no longer scaled (epoch 1 of 2 is past the first decay).
    assert records[1]["lrs"]["student"] == pytest.approx(0.1 * configs["adaptive"]["lr"])
