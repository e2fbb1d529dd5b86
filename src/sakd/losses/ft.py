"""Kim et al. NeurIPS 2018, "Paraphrasing Complex Network: Network Compression via Factor Transfer"
(RepDistiller ``FactorTransfer`` with its ``Paraphraser`` and ``Translator``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from sakd.losses._weighting import match_spatial
from sakd.losses.base import DistillContext, DistillerSetup, PretrainParams
from sakd.losses.per_sample import PerSampleDistiller
from sakd.losses.registry import register_distiller

_LEAK = 0.1


def _conv_block(conv: nn.Module, channels: int, batch_norm: bool) -> list[nn.Module]:
    norm: list[nn.Module] = [nn.BatchNorm2d(channels)] if batch_norm else []
    return [conv, *norm, nn.LeakyReLU(_LEAK)]


class Paraphraser(nn.Module):
    """Teacher-side auto-encoder (no BN): 3×3 convs C→C→kC→kC, then 3×3 transposed convs back to C."""

    def __init__(self, channels: int, factor_channels: int) -> None:
        super().__init__()
        c, k = channels, factor_channels
        self.encoder = nn.Sequential(
            *_conv_block(nn.Conv2d(c, c, 3, padding=1), c, False),
            *_conv_block(nn.Conv2d(c, k, 3, padding=1), k, False),
            *_conv_block(nn.Conv2d(k, k, 3, padding=1), k, False),
        )
        self.decoder = nn.Sequential(
            *_conv_block(nn.ConvTranspose2d(k, k, 3, padding=1), k, False),
            *_conv_block(nn.ConvTranspose2d(k, c, 3, padding=1), c, False),
            *_conv_block(nn.ConvTranspose2d(c, c, 3, padding=1), c, False),
        )

    def forward(self, teacher: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) -> factor (B, kC, H, W) and reconstruction (B, C, H, W)."""
        factor = self.encoder(teacher)
        return factor, self.decoder(factor)


class Translator(nn.Module):
    """Student-side encoder (with BN): 3×3 convs C_s→C_s→kC_t→kC_t, each + BN + LeakyReLU(0.1)."""

    def __init__(self, student_channels: int, factor_channels: int) -> None:
        super().__init__()
        c, k = student_channels, factor_channels
        self.encoder = nn.Sequential(
            *_conv_block(nn.Conv2d(c, c, 3, padding=1), c, True),
            *_conv_block(nn.Conv2d(c, k, 3, padding=1), k, True),
            *_conv_block(nn.Conv2d(k, k, 3, padding=1), k, True),
        )

    def forward(self, student: Tensor) -> Tensor:
        """(B, C_s, H, W) -> factor (B, kC_t, H, W)."""
        return self.encoder(student)


def factor_code(factor: Tensor, p: float) -> Tensor:
    """L2-normalised channel mean of factor^p, flattened: (B, C, H, W) -> (B, H·W)."""
    return F.normalize(factor.pow(p).mean(dim=1).flatten(1), dim=1)


def ft_per_sample(student_factor: Tensor, teacher_factor: Tensor, p1: float, p2: float) -> Tensor:
    """Mean |Δ|^p2 between the factor codes per sample (p2 = 1: L1): factors -> (B,)."""
    student_factor, teacher_factor = match_spatial(student_factor, teacher_factor)
    difference = factor_code(student_factor, p1) - factor_code(teacher_factor, p1)
    return difference.abs().pow(p2).mean(dim=1)


@register_distiller
class FT(PerSampleDistiller):
    """Match the student's translated factor to the teacher's paraphrased factor at the last stage.

    A pre-training stage first trains the paraphraser alone to reconstruct the teacher's feature;
    afterwards it is frozen and only the translator (and the student) learn.
    """

    name = "ft"
    description = "Factor transfer: L1 between translator and pre-trained paraphraser factors"
    spot_role = "last_stage"
    requires_maps = True

    class Params(PretrainParams):
        """RepDistiller/SAKD defaults: factor rate k, FactorTransfer p1/p2, paraphraser pre-training."""

        factor_rate: float = 0.5
        p1: float = 2.0
        p2: float = 1.0
        pretrain_lr: float = Field(default=0.01, gt=0)

    params: Params

    def __init__(self, setup: DistillerSetup) -> None:
        super().__init__(setup)
        self.paraphrasers = nn.ModuleList()
        self.translators = nn.ModuleList()
        for student, teacher in zip(self.student_spots, self.teacher_spots, strict=True):
            factor_channels = int(teacher.channels * self.params.factor_rate)
            self.paraphrasers.append(Paraphraser(teacher.channels, factor_channels))
            self.translators.append(Translator(student.channels, factor_channels))

    def spot_loss(self, k: int, student: Tensor, teacher: Tensor, ctx: DistillContext) -> Tensor:
        """FT loss of each sample at spot ``k``: maps (B, C, H, W) -> (B,).

        The paraphraser is frozen here: the teacher factor carries no gradient.
        """
        with torch.no_grad():
            teacher_factor = self.paraphrasers[k].encoder(teacher)
        return ft_per_sample(
            self.translators[k](student), teacher_factor, self.params.p1, self.params.p2
        )

    def pretrain_loss(
        self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], ctx: DistillContext
    ) -> Tensor:
        """Σ over spots of the paraphraser's reconstruction MSE of the (detached) teacher map."""
        losses = []
        for paraphraser, teacher in zip(self.paraphrasers, teacher_feats, strict=True):
            teacher = teacher.detach()
            _, reconstruction = paraphraser(teacher)
            losses.append(F.mse_loss(reconstruction, teacher))
        return torch.stack(losses).sum()

    def pretrain_parameters(self) -> list[nn.Parameter]:
        """The paraphrasers' parameters (the student and the translators are not pre-trained)."""
        return list(self.paraphrasers.parameters())
