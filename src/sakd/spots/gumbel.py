"""Straight-through Gumbel-softmax (method.md §1.4); noise from a ``sakd.seeding.SeededGenerator``."""

from __future__ import annotations

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
