"""Contrastive Representation Distillation (Tian et al., ICLR 2020), as in RepDistiller's ``crd/``.

Both pooled features are embedded (Linear + L2 norm) into ``feat_dim``. Each sample is contrasted
with its own entry and ``num_negatives`` entries of other classes ('exact' mode) in two momentum
memory banks: the student embedding against the teacher bank and the teacher embedding against the
student bank, each with RepDistiller's NCE criterion and normalisation constant Z (estimated once,
from the first batch with selected samples, then fixed).

Two things differ from the authors' code in *how*, not *what*, they compute:

* negatives are drawn on the bank's device in one batched call, with a generator owned by the
  distiller (saved in ``state_dict`` through the extra-state mechanism): uniformly over the
  training samples of other classes, **with replacement** (RepDistiller's data loader draws them
  without replacement per sample; see ``docs/distillers.md``);
* scores are computed as the full product ``anchors @ bankᵀ`` (B × N) and then gathered at the
  (B, K+1) contrast indices, instead of gathering a (B, K+1, D) tensor of bank rows first.

In a data-parallel run (:mod:`sakd.engine.distributed`) every rank keeps the same banks and draws
what a single process with the global batch would: the negatives' uniforms are drawn for the
global batch from a generator in the same state on every rank and each rank keeps its own rows;
the bank update gathers every rank's selected embeddings and indices and applies the global
batch's update on every rank; Z is estimated from the global batch's sums.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from sakd.engine.distributed import (
    all_reduce_,
    gather_global_rows,
    global_rows,
    rank_and_world_size,
)
from sakd.errors import SakdError
from sakd.losses._relational import check_spot_inputs, full_precision, safe_divide
from sakd.losses.base import DistillContext, Distiller, DistillerParams
from sakd.losses.registry import register_distiller
from sakd.models.staged import SpotInfo

NCE_EPS = 1e-7
_RANDOM_BITS = 2**62


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


def _global_batch(
    index: Tensor, student_embedded: Tensor, teacher_embedded: Tensor, sample_weights: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every rank's (B,), (B, D), (B, D), (B,) rows in global-batch order: (W·B, ...) each.

    A sample present twice (shards padded by wrapping) takes its first occurrence's values in
    both rows, so the bank update writes one well-defined row. A single process gets its inputs.
    """
    if rank_and_world_size()[1] == 1:
        return index, student_embedded, teacher_embedded, sample_weights
    dim = student_embedded.shape[1]
    packed = torch.cat(
        [
            index[:, None].double(),
            student_embedded.double(),
            teacher_embedded.double(),
            sample_weights[:, None].double(),
        ],
        1,
    )
    gathered = gather_global_rows(packed)
    all_index = gathered[:, 0].long()
    first = (all_index[:, None] == all_index[None, :]).int().argmax(1)
    gathered = gathered[first]
    dtype = student_embedded.dtype
    return (
        all_index,
        gathered[:, 1 : 1 + dim].to(dtype),
        gathered[:, 1 + dim : 1 + 2 * dim].to(dtype),
        gathered[:, -1].to(sample_weights.dtype),
    )


@register_distiller
class ContrastiveRepresentation(Distiller):
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

    def __init__(
        self,
        student_spots: Sequence[SpotInfo],
        teacher_spots: Sequence[SpotInfo],
        params: DistillerParams,
        num_classes: int,
        num_train: int,
    ) -> None:
        super().__init__(student_spots, teacher_spots, params, num_classes, num_train)
        if len(self.student_spots) != 1:
            raise ValueError(f"CRD distils at exactly one spot, got {len(self.student_spots)}")
        feat_dim = self.params.feat_dim
        self.student_embed = NormalizedEmbed(math.prod(self.student_spots[0].shape), feat_dim)
        self.teacher_embed = NormalizedEmbed(math.prod(self.teacher_spots[0].shape), feat_dim)
        bound = 1.0 / math.sqrt(feat_dim / 3)
        self.register_buffer("student_memory", torch.rand(num_train, feat_dim) * 2 * bound - bound)
        self.register_buffer("teacher_memory", torch.rand(num_train, feat_dim) * 2 * bound - bound)
        self.register_buffer("normalizers", torch.full((2,), -1.0))
        empty = torch.zeros(0, dtype=torch.long)
        self.register_buffer("train_labels", empty, persistent=False)
        self.register_buffer("class_sorted_index", empty.clone(), persistent=False)
        self.register_buffer("class_start", empty.clone(), persistent=False)
        self.register_buffer("class_size", empty.clone(), persistent=False)
        self._seed = int(torch.randint(_RANDOM_BITS, (1,)).item())
        self._generator: torch.Generator | None = None
        self._pending_generator_state: dict[str, Any] | None = None
        self._normalizers_fixed = False

    # ----------------------------------------------------------------------------- training data
    def attach_train_labels(self, labels: Tensor) -> None:
        """Index the training split by class (N,) labels, for sampling negatives of other classes."""
        labels = torch.as_tensor(labels).reshape(-1).long().to(self.student_memory.device)
        if labels.numel() != self.num_train:
            raise SakdError(
                f"CRD was built for {self.num_train} training samples but got {labels.numel()} "
                "labels: pass the labels of the same training split"
            )
        if labels.numel() and labels.min() < 0:
            raise SakdError("CRD got negative class labels: labels must be class indices 0..C-1")
        sizes = torch.bincount(labels)
        if int((sizes > 0).sum()) < 2:
            raise SakdError(
                "CRD needs at least two classes in the training split (its negatives are samples "
                "of other classes): use another distiller for single-class data"
            )
        self.train_labels = labels
        self.class_sorted_index = torch.argsort(labels, stable=True)
        self.class_start = (torch.cumsum(sizes, 0) - sizes).to(torch.int32)
        self.class_size = sizes.to(torch.int32)

    def sample_negatives(self, index: Tensor) -> Tensor:
        """(B,) dataset indices -> (B, K) indices of training samples of *other* classes.

        Uniform over the other classes' samples, with replacement, in one batched call: draw a
        rank r = ⌊u·(N − n_c)⌋ from a 53-bit uniform u, skip class c's contiguous block in the
        class-sorted order, and map the rank through that order.
        """
        if self.train_labels.numel() == 0:
            raise RuntimeError("CRD needs the training labels: call attach_train_labels() first")
        generator = self._negative_generator()
        anchor_class = self.train_labels[index]
        start = self.class_start[anchor_class][:, None]
        size = self.class_size[anchor_class][:, None]
        others = self.num_train - size
        device = self.student_memory.device
        uniform = global_rows(
            lambda shape: torch.rand(
                shape, generator=generator, device=device, dtype=torch.float64
            ),
            (index.shape[0], self.params.num_negatives),
        )
        rank = torch.minimum((uniform * others).to(torch.int32), others - 1)
        position = torch.where(rank >= start, rank + size, rank)
        return self.class_sorted_index[position]

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
        self._update_memory(index, student_embedded, teacher_embedded, sample_weights)
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

    @torch.no_grad()
    def _update_memory(
        self,
        index: Tensor,
        student_embedded: Tensor,
        teacher_embedded: Tensor,
        sample_weights: Tensor,
    ) -> None:
        """Momentum update + renormalisation of the selected rows of both banks.

        The banks are replaced rather than written in place: the autograd graph of this step keeps
        the pre-update banks it scored against. With several ranks the update is the global
        batch's (see the module docstring).
        """
        index, student_embedded, teacher_embedded, sample_weights = _global_batch(
            index, student_embedded.detach(), teacher_embedded.detach(), sample_weights
        )
        momentum = self.params.momentum
        selected = (sample_weights > 0)[:, None]
        for name, embedded in (
            ("student_memory", student_embedded),
            ("teacher_memory", teacher_embedded),
        ):
            bank = getattr(self, name)
            old_rows = bank[index]
            mixed = old_rows * momentum + embedded.detach().to(bank.dtype) * (1.0 - momentum)
            new_rows = torch.where(selected, F.normalize(mixed, p=2, dim=1), old_rows)
            setattr(self, name, bank.index_copy(0, index, new_rows))

    # ------------------------------------------------------------------------- generator state
    def _negative_generator(self) -> torch.Generator:
        """The generator for negatives, (re)created on the banks' device when needed."""
        device = self.student_memory.device
        generator = self._generator
        if generator is not None and generator.device == device:
            return generator
        fresh = torch.Generator(device=device)
        pending = self._pending_generator_state
        if pending is not None and pending["device_type"] == device.type:
            fresh.set_state(pending["state"])
        elif generator is not None:
            seed = torch.randint(_RANDOM_BITS, (1,), generator=generator, device=generator.device)
            fresh.manual_seed(int(seed.item()))
        else:
            fresh.manual_seed(self._seed)
        self._pending_generator_state = None
        self._generator = fresh
        return fresh

    def get_extra_state(self) -> dict[str, Any]:
        """The negatives generator: seed, device type and RNG state (``None`` before first use)."""
        if self._generator is not None:
            return {
                "seed": self._seed,
                "device_type": self._generator.device.type,
                "state": self._generator.get_state(),
            }
        if self._pending_generator_state is not None:
            return {"seed": self._seed, **self._pending_generator_state}
        return {"seed": self._seed, "device_type": None, "state": None}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the negatives generator saved by :meth:`get_extra_state`.

        The RNG state is applied when the generator is next created on a device of the saved type;
        on another device type the stream restarts from the saved seed.
        """
        self._seed = int(state["seed"])
        self._generator = None
        self._normalizers_fixed = False
        self._pending_generator_state = (
            None
            if state.get("state") is None
            else {"device_type": state["device_type"], "state": state["state"]}
        )
