"""``--format onnx``: the exported graph takes raw [0, 1] images and onnxruntime agrees with PyTorch.

Needs the optional extra ``sakd[onnx]`` (``make test-onnx``); skipped without onnxruntime.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import sakd
from sakd.data.embedded import load_embedded

from .test_export_contract import MyNet, RawImages

onnxruntime = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.onnx


def test_onnx_export_matches_pytorch_on_raw_images(tmp_path):
    torch.manual_seed(0)
    run = sakd.train(
        MyNet(),
        RawImages(True, 128),
        RawImages(False, 64),
        epochs=1,
        batch_size=32,
        progress=False,
        device="cpu",
        output_dir=str(tmp_path / "run"),
    )
    run.export(tmp_path / "pt" / "student.pt")
    out = run.export(tmp_path / "onnx" / "student.onnx", format="onnx")
    card = json.loads((tmp_path / "onnx" / "student.json").read_text())
    assert card["weights_format"] == "onnx" and card["weights"] == "student.onnx"
    raw = load_embedded(False, None).images[:10]
    session = onnxruntime.InferenceSession(str(out))
    onnx_logits = session.run(["logits"], {"images": raw.numpy().astype(np.float32) / 255})[0]
    model, transform = sakd.load_export(tmp_path / "pt" / "student.pt", MyNet())
    with torch.no_grad():
        torch_logits = model(transform(raw)).numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, rtol=1e-4, atol=1e-4)
    assert onnx_logits.shape == (10, 10)
