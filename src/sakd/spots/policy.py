"""The policy network: one linear layer from the pooled features of both nets to K binary choices."""

from __future__ import annotations

import torch
from torch import Tensor, nn

HOMOGENEOUS_BIAS = 10.0


class SpotPolicy(nn.Module):
    """``Linear(d_T + d_S → 2K)`` on the detached pooled features (method.md §1.3).

    Component 0 of each pair is "teacher path / distil". For homogeneous pairs its bias starts
    at +10, so almost every sample starts on the teacher path at every spot.
    """

    def __init__(
        self, teacher_dim: int, student_dim: int, num_spots: int, homogeneous: bool = False
    ) -> None:
        super().__init__()
        self.num_spots = num_spots
        self.linear = nn.Linear(teacher_dim + student_dim, 2 * num_spots)
        if homogeneous:
            # A new leaf instead of an in-place edit of the existing one (method.md §6.1).
            bias = self.linear.bias.detach().clone().view(num_spots, 2)
            bias[:, 0] += HOMOGENEOUS_BIAS
            self.linear.bias = nn.Parameter(bias.view(-1))

    def forward(self, teacher_pooled: Tensor, student_pooled: Tensor) -> Tensor:
        """(B, d_T), (B, d_S) → choice logits (B, K, 2); both inputs are detached here."""
        weight = self.linear.weight
        features = torch.cat(
            (teacher_pooled.detach().to(weight.dtype), student_pooled.detach().to(weight.dtype)),
            dim=1,
        )
        return self.linear(features).view(-1, self.num_spots, 2)
