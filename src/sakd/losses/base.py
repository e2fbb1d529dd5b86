"""The distiller contract: a loss at one or more spots that takes per-sample weights.

Every distiller

* declares the spots it consumes by role (``spot_role``, see :func:`sakd.models.resolve_spots`);
  logit distillers use ``"logits"`` and receive ``[logits]`` as their single "feature";
* is built from one :class:`DistillerSetup` (the paired spot descriptions of student and teacher,
  its validated ``Params``, the number of classes and the training split's labels) and owns its
  trainable parts (regressors, embeddings, memory banks);
* takes ``weights`` of shape (B, S) in [0, 1], one column per spot. With a 0/1 column the spot's
  value equals the reference computation on the selected sub-batch times |selected| / B;
  relational losses relate only the selected samples; 0 or 1 selected samples give exactly 0;
* returns the **sum over its spots** of those gated values (not multiplied by beta: the caller does);
* declares the loss weights it was published with beside its ``Params`` (``published``, one
  :class:`~sakd.losses.published.PublishedWeights` per table; the packaged distillers' rows are the
  packaged tables);
* may declare a pre-training stage (FT's paraphraser, AB / FSP initialisation) through
  ``pretrain_epochs`` > 0, :meth:`pretrain_loss` and :meth:`pretrain_parameters`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from sakd.losses.published import PublishedWeights, packaged_tables
from sakd.models.staged import SpotInfo


class DistillerParams(BaseModel):
    """Hyperparameters of a distiller (subclass per distiller, with the published defaults)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # finite numbers only


class PretrainParams(DistillerParams):
    """Hyperparameters of a declared pre-training stage: its length and its own SGD settings."""

    pretrain_epochs: int = Field(default=30, ge=0)
    pretrain_lr: float = Field(default=0.05, gt=0)
    pretrain_momentum: float = Field(default=0.9, ge=0, lt=1)
    pretrain_weight_decay: float = Field(default=5e-4, ge=0)


@dataclass(frozen=True, eq=False)
class DistillerSetup:
    """Everything a distiller is built from, fixed for the run.

    ``student_spots`` / ``teacher_spots``: the paired spot descriptions (equal length, paired in
    order; empty for logit distillers); ``params``: the distiller's validated ``Params``;
    ``num_classes``: classes of the data; ``train_labels``: class indices (N,) of the whole
    training split (CRD samples its negatives by class and keeps one bank row per sample).
    """

    student_spots: tuple[SpotInfo, ...]
    teacher_spots: tuple[SpotInfo, ...]
    params: DistillerParams
    num_classes: int
    train_labels: Tensor

    def __post_init__(self) -> None:
        if len(self.student_spots) != len(self.teacher_spots):
            raise ValueError("student_spots and teacher_spots must be paired (equal length)")
        object.__setattr__(self, "student_spots", tuple(self.student_spots))
        object.__setattr__(self, "teacher_spots", tuple(self.teacher_spots))
        labels = torch.as_tensor(self.train_labels).reshape(-1).long()
        object.__setattr__(self, "train_labels", labels)

    @property
    def num_train(self) -> int:
        """N, the number of training samples."""
        return self.train_labels.numel()


@dataclass
class DistillContext:
    """Per-batch facts some distillers need beyond features: labels (B,), dataset indices (B,)."""

    labels: Tensor
    index: Tensor | None = None
    epoch: int = 0


class Distiller(nn.Module):
    """Base class; see the module docstring for the contract."""

    name: ClassVar[str]
    description: ClassVar[str]
    spot_role: ClassVar[str]
    preact: ClassVar[bool] = False
    pretrain_trains_student: ClassVar[bool] = False
    # spots.mode=random as the authors ran it: the logit spot reuses the last feature spot's draw.
    random_logit_follows_last_spot: ClassVar[bool] = False
    Params: ClassVar[type[DistillerParams]] = DistillerParams
    # This distiller's loss weights per published table (``distiller.published``); a table it does
    # not declare falls back to the packaged table's row (see :mod:`sakd.losses.published`).
    published: ClassVar[Mapping[str, PublishedWeights]] = {}

    def __init__(self, setup: DistillerSetup) -> None:
        super().__init__()
        self.student_spots = list(setup.student_spots)
        self.teacher_spots = list(setup.teacher_spots)
        self.params = setup.params
        self.num_classes = setup.num_classes
        self.num_train = setup.num_train

    @classmethod
    def published_weights(cls, table: str) -> PublishedWeights | None:
        """The loss weights of ``table`` for this distiller (None: it has no row there)."""
        if table in cls.published:
            return cls.published[table]
        return packaged_tables().get(table, {}).get(cls.name)

    @property
    def num_spots(self) -> int:
        """Number of spots S (columns of ``weights``); 1 for logit distillers."""
        return max(len(self.student_spots), 1)

    @property
    def pretrain_epochs(self) -> int:
        """Epochs of the declared pre-training stage (0: none, or no :class:`PretrainParams`)."""
        return self.params.pretrain_epochs if isinstance(self.params, PretrainParams) else 0

    def forward(
        self,
        student_feats: Sequence[Tensor],
        teacher_feats: Sequence[Tensor],
        weights: Tensor,
        ctx: DistillContext,
    ) -> Tensor:
        """Sum over spots of the gated loss (a scalar); ``weights`` is (B, S)."""
        raise NotImplementedError

    def pretrain_loss(
        self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], ctx: DistillContext
    ) -> Tensor:
        """Loss of the pre-training stage (only called when ``pretrain_epochs`` > 0)."""
        raise NotImplementedError(f"{self.name} declares no pre-training stage")

    def pretrain_parameters(self) -> list[nn.Parameter]:
        """Parameters of this distiller trained by the pre-training stage."""
        return []
