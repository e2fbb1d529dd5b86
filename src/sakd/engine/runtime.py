"""Device, precision and seeding for a run."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import numpy as np
import torch

from sakd.errors import SakdError


@dataclass(frozen=True)
class Runtime:
    """Where and how tensors are computed: device, bf16 autocast, memory format."""

    device: torch.device
    bf16: bool = False
    channels_last: bool = False

    @classmethod
    def create(cls, device: str, precision: str, channels_last: bool) -> Runtime:
        """Resolve ``device='auto'`` (CUDA when present) and check the device exists."""
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SakdError(
                f"device {device!r} requested but CUDA is not available: use device=cpu"
            )
        return cls(torch.device(device), precision == "bf16", channels_last)

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
        torch.cuda.set_rng_state_all(state["cuda"])
