"""Mask arithmetic shared by the batch-relational distillers (SP, CC, RKD, PKT) and CRD.

A spot's weight column ``w`` (B,) says how much each sample belongs to the selected sub-batch.
Relations are built on the full batch (static shapes) and weighted, so that for a 0/1 column the
result equals the reference computed on the selected rows only:

* a per-pair term is weighted by ``w_i · w_j``, a per-triplet term by ``w_i · w_j · w_k``;
* the sub-batch size is ``b = Σ w``; means over the sub-batch divide by ``b``, ``b²`` or ``b³``;
* the spot's value is then multiplied by ``b / B`` (the |selected| / B gate of ``method.md`` §1.7).

Soft weights in (0, 1) are therefore degrees of membership; they never occur in SAKD, whose
decisions are exact 0/1 values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor


def check_spot_inputs(
    student_feats: Sequence[Tensor],
    teacher_feats: Sequence[Tensor],
    weights: Tensor,
    num_spots: int,
) -> None:
    """Raise ``ValueError`` unless there are ``num_spots`` feature pairs and ``weights`` is (B, S)."""
    if len(student_feats) != num_spots or len(teacher_feats) != num_spots:
        raise ValueError(
            f"expected {num_spots} student and teacher feature(s), "
            f"got {len(student_feats)} and {len(teacher_feats)}"
        )
    batch = student_feats[0].shape[0]
    if weights.shape != (batch, num_spots):
        raise ValueError(
            f"weights must have shape ({batch}, {num_spots}), got {tuple(weights.shape)}"
        )


def sum_over_spots(
    spot_loss: Callable[[Tensor, Tensor, Tensor], Tensor],
    student_feats: Sequence[Tensor],
    teacher_feats: Sequence[Tensor],
    weights: Tensor,
    num_spots: int,
) -> Tensor:
    """Σ over spots of ``spot_loss(student, teacher, weight column (B,))``, run in full precision.

    The inputs are checked first (:func:`check_spot_inputs`); ``weights`` is (B, S); a scalar.
    """
    check_spot_inputs(student_feats, teacher_feats, weights, num_spots)
    with full_precision(weights.device):
        terms = [
            spot_loss(student, teacher, weight)
            for student, teacher, weight in zip(
                student_feats, teacher_feats, weights.unbind(1), strict=True
            )
        ]
    return torch.stack(terms).sum()


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the loss math runs in: float32 for half-precision inputs, else the input's."""
    return torch.promote_types(x.dtype, torch.float32)


def safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` where the denominator is positive, ``numerator / 1`` elsewhere.

    Used for means over possibly empty selections: the numerator is then 0 too, so the result is
    exactly 0 with finite gradients, never NaN.
    """
    positive = denominator > 0
    return numerator / torch.where(positive, denominator, torch.ones_like(denominator))


def relational_gate(weights: Tensor) -> Tensor:
    """1.0 when at least two samples have a nonzero weight, else 0.0 (a scalar, no host sync)."""
    return ((weights > 0).sum() >= 2).to(weights.dtype)


def pair_weights(weights: Tensor) -> Tensor:
    """(B,) sample weights -> (B, B) pair weights ``w_i · w_j``."""
    return weights[:, None] * weights[None, :]


@contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Run the enclosed loss math in float32 even inside an autocast region."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield
