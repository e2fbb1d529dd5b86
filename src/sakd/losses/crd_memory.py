"""CRD's memory banks and its sampler of class-exclusive negatives (RepDistiller ``crd/memory.py``).

:class:`ContrastMemory` is the base class of the CRD distiller (:mod:`sakd.losses.crd`, which keeps
the loss). It holds two momentum memory banks of unit embeddings, one row per training sample, and
draws each anchor's negatives among the training samples of other classes. The banks are buffers
of the distiller itself (not of a submodule), so checkpoints keep the keys ``student_memory``,
``teacher_memory`` and ``_extra_state``.

Two things differ from the authors' code in *how*, not *what*, they compute:

* negatives are drawn on the banks' device in one batched call, with a
  :class:`sakd.seeding.SeededGenerator` saved in ``state_dict`` through the extra-state mechanism:
  uniformly over the training samples of other classes, **with replacement** (RepDistiller's data
  loader draws them without replacement per sample; see ``docs/distillers.md``);
* the bank update is a batched momentum update of the selected rows.

In a data-parallel run (:mod:`sakd.collectives`) every rank keeps the same banks and draws what a
single process with the global batch would: the negatives' uniforms are drawn for the global batch
from a generator in the same state on every rank and each rank keeps its own rows; the bank update
gathers every rank's selected embeddings and indices and applies the global batch's update on
every rank.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sakd.collectives import gather_global_rows, global_rows, rank_and_world_size
from sakd.errors import SakdError
from sakd.seeding import SeededGenerator, random_seed


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


class ContrastMemory(nn.Module):
    """Student and teacher memory banks (N, D) and the negatives sampler; call :meth:`init_memory`.

    The banks start uniform in ±1/√(D/3) (RepDistiller's ``ContrastMemory``), one row per
    training sample; the sampler indexes the training labels by class.
    """

    student_memory: Tensor
    teacher_memory: Tensor
    train_labels: Tensor
    class_sorted_index: Tensor
    class_start: Tensor
    class_size: Tensor

    def init_memory(
        self, train_labels: Tensor, feat_dim: int, num_negatives: int, momentum: float
    ) -> None:
        """Banks for the N samples of ``train_labels`` (N,), of ``feat_dim``; a freshly seeded sampler."""
        num_train = train_labels.numel()
        self.num_negatives = num_negatives
        self.momentum = momentum
        bound = 1.0 / math.sqrt(feat_dim / 3)
        self.register_buffer("student_memory", torch.rand(num_train, feat_dim) * 2 * bound - bound)
        self.register_buffer("teacher_memory", torch.rand(num_train, feat_dim) * 2 * bound - bound)
        self.rng = SeededGenerator(random_seed())
        self._index_classes(train_labels)

    @property
    def memory_size(self) -> int:
        """N, the number of training samples (bank rows)."""
        return self.student_memory.shape[0]

    # ----------------------------------------------------------------------------- training data
    def _index_classes(self, labels: Tensor) -> None:
        """Index the training split by class (N,) labels, for sampling negatives of other classes."""
        if labels.numel() and labels.min() < 0:
            raise SakdError("CRD got negative class labels: labels must be class indices 0..C-1")
        sizes = torch.bincount(labels)
        if int((sizes > 0).sum()) < 2:
            raise SakdError(
                "CRD needs at least two classes in the training split (its negatives are samples "
                "of other classes): use another distiller for single-class data"
            )
        self.register_buffer("train_labels", labels, persistent=False)
        self.register_buffer(
            "class_sorted_index", torch.argsort(labels, stable=True), persistent=False
        )
        start = (torch.cumsum(sizes, 0) - sizes).to(torch.int32)
        self.register_buffer("class_start", start, persistent=False)
        self.register_buffer("class_size", sizes.to(torch.int32), persistent=False)

    def sample_negatives(self, index: Tensor) -> Tensor:
        """(B,) dataset indices -> (B, K) indices of training samples of *other* classes.

        Uniform over the other classes' samples, with replacement, in one batched call: draw a
        rank r = ⌊u·(N − n_c)⌋ from a 53-bit uniform u, skip class c's contiguous block in the
        class-sorted order, and map the rank through that order.
        """
        device = self.student_memory.device
        generator = self.rng.on(device)
        anchor_class = self.train_labels[index]
        start = self.class_start[anchor_class][:, None]
        size = self.class_size[anchor_class][:, None]
        others = self.memory_size - size
        uniform = global_rows(
            lambda shape: torch.rand(
                shape, generator=generator, device=device, dtype=torch.float64
            ),
            (index.shape[0], self.num_negatives),
        )
        rank = torch.minimum((uniform * others).to(torch.int32), others - 1)
        position = torch.where(rank >= start, rank + size, rank)
        return self.class_sorted_index[position]

    # ----------------------------------------------------------------------------------- update
    @torch.no_grad()
    def update_memory(
        self,
        index: Tensor,
        student_embedded: Tensor,
        teacher_embedded: Tensor,
        sample_weights: Tensor,
    ) -> None:
        """Momentum update + renormalisation of the selected rows (weight > 0) of both banks.

        The banks are replaced rather than written in place: the autograd graph of this step keeps
        the pre-update banks it scored against. With several ranks the update is the global
        batch's (see the module docstring).
        """
        index, student_embedded, teacher_embedded, sample_weights = _global_batch(
            index, student_embedded.detach(), teacher_embedded.detach(), sample_weights
        )
        momentum = self.momentum
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
    def get_extra_state(self) -> dict[str, Any]:
        """The negatives generator: seed, device type and RNG state (``None`` before first use)."""
        return self.rng.state_dict()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the negatives generator saved by :meth:`get_extra_state` (at the next draw).

        On a device of another type than the saved one the stream goes on from a seed derived
        from the saved state (:class:`sakd.seeding.SeededGenerator`).
        """
        self.rng.load_state_dict(state)
