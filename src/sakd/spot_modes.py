"""The spot modes: where a run distils, shared by the config, the grid planner and the selectors.

A leaf module (no torch), so the typed config can name the modes without importing the spots layer.
"""

from __future__ import annotations

from enum import Enum


class SpotMode(str, Enum):
    """``fixed``: every spot, every sample; ``random``: a coin per sample and spot; ``adaptive``:
    the policy's choice; ``anti``: the opposite of the policy's choice."""

    FIXED = "fixed"
    RANDOM = "random"
    ADAPTIVE = "adaptive"
    ANTI = "anti"

    def __str__(self) -> str:
        return self.value

    @property
    def routed(self) -> bool:
        """True for the modes that train a policy and route through the teacher (adaptive, anti)."""
        return self in (SpotMode.ADAPTIVE, SpotMode.ANTI)

    @classmethod
    def names(cls) -> list[str]:
        """The mode names, in declaration order."""
        return [mode.value for mode in cls]
