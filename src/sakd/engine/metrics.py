"""Per-epoch metrics: one :class:`~sakd.engine.records.EpochRecord` per line and TensorBoard scalars."""

from __future__ import annotations

import json
from pathlib import Path

from sakd.engine.records import EpochRecord, read_records


class MetricsLog:
    """Append epoch records to ``<dir>/metrics.jsonl`` and mirror numbers to TensorBoard (``<dir>/tb``)."""

    def __init__(self, run_dir: Path, filename: str = "metrics.jsonl", tensorboard: bool = True):
        self.path = run_dir / filename
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(run_dir / "tb"))

    def truncate_after(self, epoch: int) -> None:
        """Drop records after (1-based) epoch ``epoch`` (left by an interrupted run that is resuming)."""
        if not self.path.exists():
            return
        kept = [
            line
            for line in self.path.read_text().splitlines()
            if line.strip() and json.loads(line).get("epoch", epoch + 1) <= epoch
        ]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: EpochRecord) -> None:
        """Append one record (and its numbers as TensorBoard scalars at step ``record.epoch``)."""
        with open(self.path, "a") as handle:
            handle.write(record.to_json() + "\n")
        if self._writer is not None:
            for tag, value in record.scalars():
                self._writer.add_scalar(tag, value, record.epoch)
            self._writer.flush()

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self._writer is not None:
            self._writer.close()


def read_metrics(path: Path) -> list[EpochRecord]:
    """All records of a ``metrics.jsonl`` file."""
    return read_records(path)
