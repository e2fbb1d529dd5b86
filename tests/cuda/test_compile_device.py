"""``compile=true`` on the device: the run completes and its losses match the eager run's.

On CUDA ``torch.compile`` runs as the library calls it (inductor, Triton kernels). The CPU
variant swaps in the ``aot_eager`` backend (dynamo's graph capture and AOT autograd, no C++ code
generation): inductor's C++ build takes minutes on the 2-core test machine.
"""

from __future__ import annotations

import json

import pytest
import torch

from sakd.config import load_config
from sakd.engine.records import read_records
from sakd.engine.run import run


def _losses(out, device: str, compile_: bool) -> list[dict[str, float]]:
    cfg = load_config(
        "quickstart",
        [
            f"output_dir={out}",
            "distiller.name=at",
            "spots.mode=fixed",
            "epochs=1",
            "batch_size=16",
            "data.train_limit=64",
            "data.test_limit=32",
            f"device={device}",
            "precision=fp32",
            "channels_last=false",
            f"compile={str(compile_).lower()}",
            "progress=false",
        ],
    )
    summary = run(cfg)
    assert summary.last_top1 is not None
    return [record.losses for record in read_records(out / "metrics.jsonl")]


def test_compiled_run_matches_the_eager_losses(tmp_path, device, monkeypatch):
    torch._dynamo.reset()
    if device == "cpu":
        original = torch.compile
        monkeypatch.setattr(torch, "compile", lambda fn: original(fn, backend="aot_eager"))
    eager = _losses(tmp_path / "eager", device, False)
    compiled = _losses(tmp_path / "compiled", device, True)
    assert [set(e) for e in eager] == [set(c) for c in compiled]
    for e, c in zip(eager, compiled, strict=True):
        for name in e:
            # fused kernels (and TF32 convolutions) round differently: epoch means stay close
            assert c[name] == pytest.approx(e[name], rel=1e-2, abs=1e-3), name
    facts = json.loads((tmp_path / "compiled" / "run.json").read_text())
    assert facts["compile"] is True
