"""Straight-through Gumbel-softmax (method.md §1.4) and a seeded generator that survives checkpoints."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor

GUMBEL_EPS = 1e-20
GUMBEL_TAU = 5.0


def sample_gumbel(shape: torch.Size | tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Gumbel(0, 1) noise g = −log(−log(U+ε)+ε), U ~ Uniform(0, 1), float32 on the generator's device."""
    uniform = torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return -torch.log(-torch.log(uniform + GUMBEL_EPS) + GUMBEL_EPS)


def gumbel_softmax_soft(logits: Tensor, noise: Tensor, tau: float = GUMBEL_TAU) -> Tensor:
    """Soft sample softmax((π + g) / τ) over the last dimension, in float32; shape of ``logits``."""
    return torch.softmax((logits.float() + noise) / tau, dim=-1)


def straight_through_gumbel(logits: Tensor, noise: Tensor, tau: float = GUMBEL_TAU) -> Tensor:
    """Hard one-hot sample (…, C) with exact 0/1 values whose gradient is the soft sample's gradient."""
    soft = gumbel_softmax_soft(logits, noise, tau)
    hard = torch.nn.functional.one_hot(soft.argmax(dim=-1), soft.shape[-1]).to(soft.dtype)
    # (soft − soft.detach()) is exactly 0 in the forward pass, so the values stay exactly 0/1.
    return hard + (soft - soft.detach())


class SeededGenerator:
    """A ``torch.Generator`` created lazily on the device where samples are drawn (CPU or GPU).

    Its state round-trips through :meth:`state_dict` / :meth:`load_state_dict` (plain dict of
    int, str and a uint8 tensor, loadable with ``torch.load(weights_only=True)``). A state saved on
    one device type and loaded on another cannot be restored bit for bit: the stream then goes on
    from a seed derived deterministically from the saved state.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._generator: torch.Generator | None = None
        self._pending: dict[str, Any] | None = None

    def on(self, device: torch.device) -> torch.Generator:
        """The generator on ``device``, created (seeded or restored) at first use there."""
        current = self._generator
        if current is not None and _same_device(current.device, device):
            return current
        fresh = torch.Generator(device=device)
        if current is not None:
            fresh.manual_seed(_derived_seed(current.get_state()))
        elif self._pending is not None and self._pending["device_type"] == fresh.device.type:
            fresh.set_state(self._pending["state"])
        elif self._pending is not None:
            fresh.manual_seed(_derived_seed(self._pending["state"]))
        else:
            fresh.manual_seed(self.seed)
        self._generator = fresh
        self._pending = None
        return fresh

    def state_dict(self) -> dict[str, Any]:
        """Seed, device type and generator state (None before the first draw)."""
        if self._generator is not None:
            return {
                "seed": self.seed,
                "device_type": self._generator.device.type,
                "state": self._generator.get_state(),
            }
        if self._pending is not None:
            return {"seed": self.seed, **self._pending}
        return {"seed": self.seed, "device_type": None, "state": None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; applied at the next draw."""
        self.seed = int(state["seed"])
        self._generator = None
        self._pending = None
        if state.get("state") is not None:
            self._pending = {"device_type": state["device_type"], "state": state["state"].cpu()}


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)


def _derived_seed(state: Tensor) -> int:
    digest = hashlib.sha256(state.cpu().numpy().tobytes()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
