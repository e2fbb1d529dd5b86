"""Device, precision, memory format, compilation, ranks and seeding for a run."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import numpy as np
import torch

from sakd.engine.distributed import rank_and_world_size
from sakd.errors import SakdError


@dataclass(frozen=True)
class Runtime:
    """Where and how tensors are computed: device, bf16 autocast, memory format, ranks.

    ``rank`` / ``world_size`` describe the data-parallel launch (0 / 1 in a single process).
    """

    device: torch.device
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    rank: int = 0
    world_size: int = 1

    @classmethod
    def create(
        cls,
        device: str,
        precision: str = "auto",
        channels_last: bool | str = "auto",
        compile: bool = False,
    ) -> Runtime:
        """Resolve ``'auto'`` settings and check the device exists.

        ``device='auto'``: CUDA when present. ``precision='auto'``: bf16 autocast on a GPU that
        supports it, fp32 otherwise. ``channels_last='auto'``: on for CUDA, off on the CPU. Ranks
        come from the default process group (see :mod:`sakd.engine.distributed`).
        """
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SakdError(
                f"device {device!r} requested but CUDA is not available: use device=cpu"
            )
        resolved = torch.device(device)
        on_gpu = resolved.type == "cuda"
        if precision == "auto":
            bf16 = on_gpu and torch.cuda.is_bf16_supported()
        else:
            bf16 = precision == "bf16"
        memory_format = on_gpu if channels_last == "auto" else bool(channels_last)
        rank, world_size = rank_and_world_size()
        return cls(resolved, bf16, memory_format, compile, rank, world_size)

    @property
    def precision(self) -> str:
        """``'bf16'`` or ``'fp32'``: what the run computes in."""
        return "bf16" if self.bf16 else "fp32"

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on the run's device when enabled, else a no-op."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in the run's memory format."""
        if self.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def prepare_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """Move a module to the device (and memory format)."""
        module.to(self.device)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def compile_network(self, network: torch.nn.Module) -> torch.nn.Module:
        """With ``compile``: replace ``forward`` and ``forward_features`` by ``torch.compile``d ones.

        The module itself (parameters, state dict, submodules) is unchanged, so checkpoints and
        the routed pass, which runs the network's stages directly, are unaffected.
        """
        if not self.compile:
            return network
        network.forward = torch.compile(network.forward)
        if hasattr(network, "forward_features"):
            network.forward_features = torch.compile(network.forward_features)
        return network


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Global RNG states (torch CPU and CUDA) as tensors, for checkpoints."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # A run resumed on a machine with fewer GPUs restores the devices it has.
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
