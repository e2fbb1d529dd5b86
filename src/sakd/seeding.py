"""A seeded random generator that survives checkpoints and device moves, for any layer.

Random draws that are part of training (Gumbel noise and random spot choices in ``spots/``, CRD's
negatives in ``losses/``) come from a :class:`SeededGenerator` owned by the module that draws, and
saved with it (``get_extra_state``), so a resumed run draws what the uninterrupted run draws.
This module is a leaf: it imports nothing from sakd.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor

RANDOM_BITS = 2**62


def random_seed() -> int:
    """A fresh seed in [0, 2**62) from torch's global generator (so ``torch.manual_seed`` fixes it)."""
    return int(torch.randint(RANDOM_BITS, (1,)).item())


class SeededGenerator:
    """A ``torch.Generator`` created lazily on the device where samples are drawn (CPU or GPU).

    Its state round-trips through :meth:`state_dict` / :meth:`load_state_dict` (plain dict of
    int, str and a uint8 tensor, loadable with ``torch.load(weights_only=True)``). A state saved on
    one device type and loaded on another cannot be restored bit for bit: the stream then goes on
    from a seed derived deterministically from the saved state. A move to another device in the
    middle of a run goes on the same way, from a seed derived from the current state, so the
    draws depend only on the seed and on the sequence of devices, never on how often or when the
    generator was asked for.
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
