"""Per-epoch metrics: one JSON object per line in ``metrics.jsonl`` and TensorBoard scalars."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append epoch records to ``<dir>/metrics.jsonl`` and mirror numbers to TensorBoard (``<dir>/tb``)."""

    def __init__(self, run_dir: Path, filename: str = "metrics.jsonl", tensorboard: bool = True):
        self.path = run_dir / filename
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(run_dir / "tb"))

    def truncate_after(self, epoch: int) -> None:
        """Drop records of epochs ≥ ``epoch`` (left by an interrupted run that is resuming)."""
        if not self.path.exists():
            return
        kept = [
            line
            for line in self.path.read_text().splitlines()
            if line.strip() and json.loads(line).get("epoch", -1) < epoch
        ]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (and its numeric leaves as TensorBoard scalars at step ``epoch``)."""
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is not None:
            step = int(record.get("epoch", 0))
            for tag, value in _flatten(record):
                if tag != "epoch":
                    self._writer.add_scalar(tag, value, step)
            self._writer.flush()

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self._writer is not None:
            self._writer.close()


def _flatten(record: dict[str, Any], prefix: str = ""):
    for key, value in record.items():
        tag = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, tag + "/")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, int | float) and not isinstance(item, bool):
                    yield f"{tag}/{i}", float(item)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield tag, float(value)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
