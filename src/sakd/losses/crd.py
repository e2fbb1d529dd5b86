"""Contrastive Representation Distillation (Tian et al., ICLR 2020), as in RepDistiller's ``crd/``.

Both pooled features are embedded (Linear + L2 norm) into ``feat_dim``. Each sample is contrasted
with its own entry and ``num_negatives`` entries of other classes ('exact' mode) in two momentum
memory banks: the student embedding against the teacher bank and the teacher embedding against the
student bank, each with RepDistiller's NCE criterion and normalisation constant Z (estimated once,
from the first batch with selected samples, then fixed).

The memory banks and the sampler of negatives are :class:`sakd.losses.crd_memory.ContrastMemory`
(the distiller's base class); this module keeps the embeddings and the loss. One thing differs
from the authors' code in *how*, not *what*, it computes: scores are the full product
``anchors @ bankᵀ`` (B × N) gathered at the (B, K+1) contrast indices, instead of a gathered
(B, K+1, D) tensor of bank rows (the sampler's differences are listed in ``crd_memory``).

In a data-parallel run (:mod:`sakd.collectives`) every rank keeps the same banks and draws what a
single process with the global batch would (see ``crd_memory``); Z is estimated from the global
batch's sums.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from sakd.collectives import all_reduce_
from sakd.losses._relational import check_spot_inputs, full_precision, safe_divide
from sakd.losses.base import DistillContext, Distiller, DistillerParams, DistillerSetup
from sakd.losses.crd_memory import ContrastMemory
from sakd.losses.registry import register_distiller

NCE_EPS = 1e-7


def contrast_scores(anchors: Tensor, bank: Tensor, contrast_index: Tensor) -> Tensor:
    """Dot products of each anchor with its bank rows: (B, D), (N, D), (B, K+1) -> (B, K+1)."""
    return (anchors @ bank.t()).gather(1, contrast_index)


def nce_per_sample(
    scores: Tensor, log_normalizer: Tensor, temperature: float, num_train: int
) -> Tensor:
    """RepDistiller's ``ContrastLoss`` per sample: (B, K+1) scores, positive first -> (B,).

    With P = exp(score / T) / Z and noise probability K/N:
    −log(P₊ / (P₊ + K/N + eps)) − Σ_k log((K/N) / (P_k + K/N + eps)), computed in log space as
    Σ_j log(P_j + K/N + eps) − log P₊ − K·log(K/N).
    """
    num_negatives = scores.shape[1] - 1
    noise = num_negatives / num_train
    log_probs = scores / temperature - log_normalizer
    log_shifted = torch.logaddexp(log_probs, log_probs.new_tensor(math.log(noise + NCE_EPS)))
    return log_shifted.sum(1) - log_probs[:, 0] - num_negatives * math.log(noise)


class NormalizedEmbed(nn.Module):
    """Flatten, project linearly, L2-normalise: (B, ...) -> (B, out_dim) unit vectors."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, ...) -> (B, out_dim)."""
        return F.normalize(self.linear(x.reshape(x.shape[0], -1)), p=2, dim=1)


@register_distiller
class ContrastiveRepresentation(ContrastMemory, Distiller):
    """CRD: NCE between student and teacher embeddings over momentum memory banks."""

    name = "crd"
    description = (
        "Contrastive Representation Distillation (Tian et al. 2020): NCE over memory banks"
    )
    spot_role = "pooled"

    class Params(DistillerParams):
        """CRD's published settings (RepDistiller ``feat_dim``, ``nce_k``, ``nce_t``, ``nce_m``)."""

        feat_dim: int = Field(default=128, ge=1, description="embedding size (feat_dim)")
        num_negatives: int = Field(default=16384, ge=1, description="negatives per sample (nce_k)")
        temperature: float = Field(default=0.07, gt=0, description="score temperature (nce_t)")
        momentum: float = Field(default=0.5, ge=0, lt=1, description="memory-bank momentum (nce_m)")

    def __init__(self, setup: DistillerSetup) -> None:
        super().__init__(setup)
        if len(self.student_spots) != 1:
            raise ValueError(f"CRD distils at exactly one spot, got {len(self.student_spots)}")
        feat_dim = self.params.feat_dim
        self.student_embed = NormalizedEmbed(math.prod(self.student_spots[0].shape), feat_dim)
        self.teacher_embed = NormalizedEmbed(math.prod(self.teacher_spots[0].shape), feat_dim)
        self.init_memory(
            setup.train_labels, feat_dim, self.params.num_negatives, self.params.momentum
        )
        self.register_buffer("normalizers", torch.full((2,), -1.0))
        self._normalizers_fixed = False

    # ---------------------------------------------------------------------------------- forward
    def forward(
        self,
        student_feats: Sequence[Tensor],
        teacher_feats: Sequence[Tensor],
        weights: Tensor,
        ctx: DistillContext,
    ) -> Tensor:
        """Gated CRD loss (a scalar): pooled features (B, D), ``weights`` (B, 1), ``ctx.index`` (B,).

        The NCE loss is a per-sample sum, so the weighted value is (1/B) Σ_i w_i ℓ_i; the memory
        banks are updated (after scoring) only at the rows of samples with w_i > 0.
        """
        check_spot_inputs(student_feats, teacher_feats, weights, 1)
        if ctx.index is None:
            raise ValueError("CRD needs ctx.index: the dataset indices (B,) of the batch")
        device = self.student_memory.device
        index = ctx.index.to(device=device, dtype=torch.long)
        dtype = self.student_memory.dtype
        sample_weights = weights[:, 0].detach().to(dtype)
        negatives = self.sample_negatives(index)
        contrast_index = torch.cat([index[:, None], negatives], 1)
        with full_precision(device):
            student_embedded = self.student_embed(student_feats[0].to(dtype))
            teacher_embedded = self.teacher_embed(teacher_feats[0].detach().to(dtype))
            loss = self._contrast_loss(
                student_embedded, teacher_embedded, contrast_index, sample_weights
            )
        self.update_memory(index, student_embedded, teacher_embedded, sample_weights)
        return loss

    def _contrast_loss(
        self,
        student_embedded: Tensor,
        teacher_embedded: Tensor,
        contrast_index: Tensor,
        sample_weights: Tensor,
    ) -> Tensor:
        """Both NCE directions, weighted per sample and divided by B."""
        student_scores = contrast_scores(student_embedded, self.teacher_memory, contrast_index)
        teacher_scores = contrast_scores(teacher_embedded, self.student_memory, contrast_index)
        if not self._normalizers_fixed:
            self._estimate_normalizers(
                student_scores.detach(), teacher_scores.detach(), sample_weights
            )
        log_normalizers = torch.where(
            self.normalizers > 0, self.normalizers, torch.ones_like(self.normalizers)
        ).log()
        temperature, num_train = self.params.temperature, self.num_train
        per_sample = nce_per_sample(
            student_scores, log_normalizers[0], temperature, num_train
        ) + nce_per_sample(teacher_scores, log_normalizers[1], temperature, num_train)
        return (sample_weights * per_sample).sum() / sample_weights.shape[0]

    @torch.no_grad()
    def _estimate_normalizers(
        self, student_scores: Tensor, teacher_scores: Tensor, sample_weights: Tensor
    ) -> None:
        """Set each unset Z to N × the mean of exp(score / T) over the selected rows.

        Runs until both constants are set (normally only on the first step): the check that ends
        it is the only host synchronisation of this distiller.
        """
        sums = torch.stack(
            [
                (sample_weights * torch.exp(scores / self.params.temperature).mean(1)).sum()
                for scores in (student_scores, teacher_scores)
            ]
            + [sample_weights.sum()]
        )
        sums = all_reduce_(sums)
        selected = sums[2]
        estimates = self.num_train * safe_divide(sums[:2], selected)
        unset = (self.normalizers < 0) & (selected > 0)
        self.normalizers.copy_(torch.where(unset, estimates, self.normalizers))
        self._normalizers_fixed = bool((self.normalizers > 0).all())

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the negatives generator; Z is re-read from the (loaded) ``normalizers``."""
        super().set_extra_state(state)
        self._normalizers_fixed = False
