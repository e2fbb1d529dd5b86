"""The ONNX export (``sakd export --format onnx``): a network that takes raw [0, 1] images.

The normalisation of the run (``(x - mean) / std``) is folded into the graph
(:class:`~sakd.data.contract.Normalized`), so a deployer feeds ``image / 255`` as float32
(N, 3, H, W) with H x W the contract's input size; the batch dimension is dynamic. Exported with
``torch.onnx.export`` (the dynamo exporter: needs the extra ``sakd[onnx]``: onnx, onnxscript,
and onnxruntime to run it).
"""

from __future__ import annotations

import copy
import io
import warnings

import torch
from torch import nn

from sakd.data.contract import InputContract, Normalized
from sakd.errors import SakdError

OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAME = "logits"


def onnx_bytes(module: nn.Module, state: dict, contract: InputContract) -> bytes:
    """``module`` with ``state`` loaded (strictly, on a copy) as an ONNX model over raw [0, 1] images."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise SakdError(
            "--format onnx needs the optional extra: pip install 'sakd[onnx]' (onnx, onnxscript, "
            "onnxruntime)"
        ) from None
    net = copy.deepcopy(module).cpu().float()
    net.load_state_dict(state, strict=True)
    wrapped = Normalized(net, contract.mean, contract.std).eval()
    example = torch.rand(2, len(contract.mean), *contract.size)
    batch = torch.export.Dim("batch", min=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapped,
                (example,),
                dynamo=True,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
    except Exception as exc:  # the exporter's own errors are many and long
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SakdError(
            f"torch.onnx could not export {type(module).__name__} ({first[:200]}): export "
            "--format pt instead, or make the model exportable (docs/api.md, Deploying)"
        ) from None
    buffer = io.BytesIO()
    program.save(buffer)
    return buffer.getvalue()
