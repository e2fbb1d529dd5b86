"""What the trainer trains: named losses from a step, named parameter groups, declared phases.

The trainer knows nothing about distillers or spot modes. A :class:`Task` hands it

* ``phases()``: the training phases in order — optional pre-training stages a distiller declares
  (FT's paraphraser, AB / FSP initialisation) and the main phase — each with its own step function,
  parameter groups and number of epochs;
* ``checkpoint_modules()``: the modules whose state makes the run resumable (never the frozen teacher);
* ``eval_model``: the network evaluated every epoch (the student);
* ``spot_names``: the names of the spots whose distilled fractions a step reports as the 1-D stat
  ``spot_rates`` (empty when it reports none).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor, nn


@dataclass
class ParamGroup:
    """Parameters stepped by one SGD optimizer with these settings."""

    params: list[nn.Parameter]
    lr: float
    weight_decay: float
    momentum: float = 0.9
    nesterov: bool = False


@dataclass
class StepResult:
    """One training step: named losses (their sum is back-propagated once), logits, logged stats.

    ``stats`` values are detached scalar tensors, except ``spot_rates`` (K,): the fraction of the
    batch distilled at each spot, logged by the names of :attr:`Task.spot_names`.
    """

    losses: dict[str, Tensor]
    logits: Tensor | None = None
    stats: dict[str, Tensor] = field(default_factory=dict)


StepFn = Callable[[Tensor, Tensor, Tensor, int], StepResult]


@dataclass
class Phase:
    """A stretch of training: ``epochs`` epochs of ``step`` updating ``groups``.

    ``decay`` applies the step-decay schedule; ``evaluate`` runs the test split after each epoch
    (main phase only: pre-training stages are not model-selection epochs). ``data_key``: the key of
    the phase's data order: its epoch e draws the order and augmentation of data epoch
    ``data_key + e`` (a pure function of the seed and that number). The main phase keeps key 0;
    pre-training phases take keys of their own (:func:`pretrain_data_key`), so their orders are
    not the main phase's.
    """

    name: str
    epochs: int
    step: StepFn
    groups: dict[str, ParamGroup]
    decay: bool = True
    evaluate: bool = True
    data_key: int = 0


# Data keys of pre-training phases are multiples of this: room for that many epochs per phase.
PRETRAIN_DATA_KEY_STRIDE = 10_000


def pretrain_data_key(position: int) -> int:
    """The data key of the pre-training phase at ``position`` (0-based) among the phases."""
    return PRETRAIN_DATA_KEY_STRIDE * (position + 1)


class Task(nn.Module):
    """Base class for what the trainer trains (see the module docstring)."""

    def phases(self, epochs: int) -> list[Phase]:
        """Phases in order; the last is the main phase of ``epochs`` epochs."""
        raise NotImplementedError

    def checkpoint_modules(self) -> dict[str, nn.Module]:
        """Modules saved in (and restored from) checkpoints, by name; ``student`` is always one."""
        raise NotImplementedError

    @property
    def eval_model(self) -> nn.Module:
        """The network evaluated each epoch."""
        raise NotImplementedError

    @property
    def spot_names(self) -> list[str]:
        """Names of the entries of the step's ``spot_rates`` stat, in order (none by default)."""
        return []
