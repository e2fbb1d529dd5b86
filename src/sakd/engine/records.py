"""The epoch record: what the trainer writes after every epoch and every reader reads back.

One :class:`EpochRecord` per line of ``metrics.jsonl`` (main phase) and ``pretrain.jsonl``
(pre-training stages), mirrored to TensorBoard and printed as one console line. It is the only
agreement between the trainer and its readers (``sakd report``, ``sakd plot``, the quick-start,
``scripts/``): nobody reads the files by ad-hoc string keys.

Conventions a user sees:

* ``epoch`` is **1-based** and counts the epochs of its phase: the first line of ``metrics.jsonl``
  says ``"epoch": 1``, the TensorBoard step of that epoch is 1, the console line says
  ``epoch 1/N``, and ``summary.json``'s ``best_epoch`` uses the same numbering.
* ``spot_rates`` maps each spot's **name** to the fraction of training samples distilled there in
  the epoch, in spot order: the distiller's feature spots (names from the student's
  :meth:`~sakd.models.StagedNet.spot_info`: ``stage2`` for a zoo network, the module path such as
  ``layer2`` for a user model), then ``logits`` (vanilla KD). Empty for single-network runs.
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sakd.errors import SakdError

LOGIT_SPOT = "logits"


class EpochRecord(BaseModel):
    """One finished epoch of one phase (see the module docstring for the conventions)."""

    model_config = ConfigDict(extra="forbid")

    epoch: int = Field(ge=1)
    phase: str
    lr: float
    lrs: dict[str, float] = Field(default_factory=dict)
    losses: dict[str, float] = Field(default_factory=dict)
    spot_rates: dict[str, float] = Field(default_factory=dict)
    stats: dict[str, float] = Field(default_factory=dict)
    images_per_sec: float = 0.0
    epoch_seconds: float = 0.0
    test_top1: float | None = None
    test_top5: float | None = None
    best_top1: float | None = None

    @property
    def spot_names(self) -> list[str]:
        """Spot names in order (feature spots…, ``logits``)."""
        return list(self.spot_rates)

    def to_json(self) -> str:
        """One line of JSON (no newline)."""
        return self.model_dump_json()

    def scalars(self) -> list[tuple[str, float]]:
        """(TensorBoard tag, value) of every number but the epoch: ``losses/ce``, ``spot_rates/stage2``…"""
        tags: list[tuple[str, float]] = [("lr", self.lr)]
        for group in ("lrs", "losses", "spot_rates", "stats"):
            tags += [(f"{group}/{name}", value) for name, value in getattr(self, group).items()]
        tags += [("images_per_sec", self.images_per_sec), ("epoch_seconds", self.epoch_seconds)]
        for name in ("test_top1", "test_top5", "best_top1"):
            value = getattr(self, name)
            if value is not None:
                tags.append((name, value))
        return tags

    def console_line(self, epochs: int) -> str:
        """The line printed after the epoch: lr, losses, test top-1 / best, spot rates, speed, time."""
        parts = [f"{self.phase} epoch {self.epoch}/{epochs}", f"lr {self.lr:.4g}"]
        parts += [f"{name} {value:.4f}" for name, value in self.losses.items()]
        if self.test_top1 is not None:
            best = f" (best {self.best_top1:.2f})" if self.best_top1 is not None else ""
            parts.append(f"test top-1 {self.test_top1:.2f}{best}")
        if self.spot_rates:
            rates = " ".join(f"{name} {value:.2f}" for name, value in self.spot_rates.items())
            parts.append(f"spots {rates}")
        parts.append(f"{self.images_per_sec:.0f} img/s")
        parts.append(f"{self.epoch_seconds:.1f} s")
        return " | ".join(parts)


def parse_record(line: str) -> EpochRecord:
    """One line of a metrics file; raises ``ValueError`` saying what is wrong with it."""
    try:
        return EpochRecord.model_validate_json(line)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "json_invalid":
            raise ValueError("is not JSON (corrupt or cut short)") from None
        raise ValueError(
            f"is not an epoch record ({where or 'record'}: {err['msg']}; written by another sakd "
            "version?)"
        ) from None


def parse_records(text: str, name: str = "metrics.jsonl") -> list[EpochRecord]:
    """Every record of a metrics file's text; raises ``ValueError`` naming the first bad line."""
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(parse_record(line))
        except ValueError as exc:
            raise ValueError(f"{name} line {number} {exc}") from None
    return records


def read_records(path: str | Path) -> list[EpochRecord]:
    """Every record of a ``metrics.jsonl`` / ``pretrain.jsonl`` file; :class:`SakdError` if unreadable."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise SakdError(f"{path.parent}: {path.name} is not a text file (damaged)") from None
    except OSError as exc:
        raise SakdError(
            f"cannot read {str(path)!r} ({exc.strerror or exc}): is it a run folder?"
        ) from None
    try:
        return parse_records(text, path.name)
    except ValueError as exc:
        raise SakdError(f"{path.parent}: {exc}") from None


def finite(value: float | None) -> bool:
    """True for a finite number (not None, NaN or inf)."""
    return value is not None and math.isfinite(value)
