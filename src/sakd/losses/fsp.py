"""Yim et al. CVPR 2017, "A Gift from Knowledge Distillation: Fast Optimization, Network
Minimization and Transfer Learning" (RepDistiller ``FSP``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from sakd.errors import SakdError
from sakd.losses.base import DistillContext, DistillerSetup, PretrainParams
from sakd.losses.per_sample import InitialisationDistiller
from sakd.losses.registry import register_distiller


def fsp_matrix(lower: Tensor, upper: Tensor) -> Tensor:
    """Flow matrix G[b, j, i] = mean over positions of upper_j · lower_i: -> (B, C_upper, C_lower).

    The map with the larger height is adaptive-average-pooled to the other's size first.
    """
    if lower.shape[2] > upper.shape[2]:
        lower = F.adaptive_avg_pool2d(lower, upper.shape[2:])
    elif lower.shape[2] < upper.shape[2]:
        upper = F.adaptive_avg_pool2d(upper, lower.shape[2:])
    return upper.flatten(2) @ lower.flatten(2).transpose(1, 2) / lower.shape[2] / lower.shape[3]


def fsp_per_sample(
    student_lower: Tensor, student_upper: Tensor, teacher_lower: Tensor, teacher_upper: Tensor
) -> Tensor:
    """Mean squared difference of the student's and teacher's flow matrices per sample: -> (B,)."""
    student_flow = fsp_matrix(student_lower, student_upper)
    teacher_flow = fsp_matrix(teacher_lower, teacher_upper)
    return (student_flow - teacher_flow).pow(2).flatten(1).mean(dim=1)


@register_distiller
class FSP(InitialisationDistiller):
    """Match the "flow of solution procedure" (Gram matrices between consecutive maps).

    Spots are the stem and every stage output; the flow between spots k and k+1 is gated by the
    weight column of spot k+1 (column 0 gates nothing). As in RepDistiller, FSP is an
    initialisation method: a pre-training stage trains the student's stages on it; the main stage
    uses no FSP term unless ``main_stage`` is set.
    """

    name = "fsp"
    description = "FSP: match flow (Gram) matrices between consecutive maps"
    spot_role = "maps"
    requires_maps = True

    class Params(PretrainParams):
        """RepDistiller defaults."""

        main_stage: bool = False

    params: Params

    def __init__(self, setup: DistillerSetup) -> None:
        super().__init__(setup)
        if len(self.student_spots) < 2:
            raise SakdError("fsp needs at least two feature maps (stem and one stage) per network")
        for student, teacher in zip(self.student_spots, self.teacher_spots, strict=True):
            if student.channels != teacher.channels:
                raise SakdError(
                    f"fsp needs equal channel counts at every map, but student F[{student.index}] "
                    f"has {student.channels} and teacher F[{teacher.index}] has "
                    f"{teacher.channels}: pick a pair with matching widths or another distiller"
                )

    def per_sample_losses(
        self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], ctx: DistillContext
    ) -> dict[int, Tensor]:
        """Per column k ≥ 1, the FSP loss (B,) of the flow from map k − 1 to map k (S − 1 terms)."""
        teacher_feats = [teacher.detach() for teacher in teacher_feats]
        return {
            k: fsp_per_sample(
                student_feats[k - 1], student_feats[k], teacher_feats[k - 1], teacher_feats[k]
            )
            for k in range(1, len(student_feats))
        }

    def pretrain_parameters(self) -> list[nn.Parameter]:
        """FSP owns no parameters: its pre-training stage trains only the student's stages."""
        return []
