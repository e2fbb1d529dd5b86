"""Heo et al. AAAI 2019, "Knowledge Transfer via Distillation of Activation Boundaries Formed by
Hidden Neurons" (RepDistiller ``ABLoss`` with its ``Connector``)."""

from __future__ import annotations

from torch import Tensor, nn

from sakd.losses.base import DistillContext, DistillerSetup, PretrainParams
from sakd.losses.per_sample import InitialisationDistiller
from sakd.losses.registry import register_distiller
from sakd.models.connectors import ConvReg
from sakd.models.staged import SpotInfo


def ab_per_sample(student: Tensor, teacher: Tensor, margin: float) -> Tensor:
    """Alternative-L2 activation-boundary loss summed over all elements of each sample.

    A student pre-activation s is pushed below −margin where the teacher's pre-activation t ≤ 0
    and above +margin where t > 0: (s+m)²·[s > −m, t ≤ 0] + (s−m)²·[s ≤ m, t > 0]. (B, C, H, W) -> (B,).
    """
    teacher_off = (teacher <= 0).to(student.dtype)
    teacher_on = 1 - teacher_off
    below = (student > -margin).to(student.dtype) * teacher_off
    above = (student <= margin).to(student.dtype) * teacher_on
    elementwise = (student + margin).pow(2) * below + (student - margin).pow(2) * above
    return elementwise.flatten(1).sum(dim=1)


@register_distiller
class AB(InitialisationDistiller):
    """Transfer the teacher's activation boundaries (signs of pre-ReLU responses) at every stage.

    As in RepDistiller, AB is an initialisation method: a pre-training stage trains the student's
    stages and the connectors on this loss; the main stage uses no AB term unless
    ``main_stage`` is set.
    """

    name = "ab"
    description = "Activation boundaries: margin loss on pre-ReLU maps"
    spot_role = "stages"
    requires_maps = True
    preact = True

    class Params(PretrainParams):
        """RepDistiller defaults; per-stage weights are 2^(k−S+1) for k = 0..S−1."""

        margin: float = 1.0
        loss_scale: float = 3e-3
        main_stage: bool = False

    params: Params

    def __init__(self, setup: DistillerSetup) -> None:
        super().__init__(setup)
        self.connectors = nn.ModuleList(
            _connector(s, t) for s, t in zip(self.student_spots, self.teacher_spots, strict=True)
        )
        count = len(self.student_spots)
        self.layer_weights = [2.0 ** (k - count + 1) for k in range(count)]

    def spot_loss(self, k: int, student: Tensor, teacher: Tensor, ctx: DistillContext) -> Tensor:
        """The weighted and scaled AB loss of each sample at spot ``k``: pre-ReLU maps -> (B,)."""
        return (
            self.layer_weights[k]
            * self.params.loss_scale
            * ab_per_sample(self.connectors[k](student), teacher, self.params.margin)
        )

    def pretrain_parameters(self) -> list[nn.Parameter]:
        """The connectors' parameters (the student's stages are added by the trainer)."""
        return list(self.connectors.parameters())


def _connector(student: SpotInfo, teacher: SpotInfo) -> nn.Module:
    """Identity when the maps already have the same channels and height; else ConvReg without ReLU."""
    if student.channels == teacher.channels and student.shape[1] == teacher.shape[1]:
        return nn.Identity()
    return ConvReg(student.shape, teacher.shape, use_relu=False)  # type: ignore[arg-type]
