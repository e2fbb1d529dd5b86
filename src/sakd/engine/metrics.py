"""Per-epoch metrics: one :class:`~sakd.engine.records.EpochRecord` per line and TensorBoard scalars."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sakd.engine.checkpoint import append_text, atomic_write_text, check_regular_file
from sakd.engine.records import EpochRecord
from sakd.errors import SakdError


class MetricsLog:
    """Append epoch records to ``<dir>/metrics.jsonl`` and mirror numbers to TensorBoard (``<dir>/tb``)."""

    def __init__(self, run_dir: Path, filename: str = "metrics.jsonl", tensorboard: bool = True):
        self.path = run_dir / filename
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(run_dir / "tb"))

    def truncate_after(
        self, epoch: int, phase: str | None = None, earlier: tuple[str, ...] = ()
    ) -> None:
        """Drop records after (1-based) epoch ``epoch`` (left by an interrupted run that is resuming).

        With ``phase``, only that phase's records up to ``epoch`` and every record of the
        ``earlier`` phases are kept (``pretrain.jsonl`` holds several phases). A last line cut short
        (a kill or a full disk in the middle of a write) is dropped too; any other line that is not
        a JSON record is one error saying what to do.
        """
        check_regular_file(self.path)
        if not self.path.exists():
            return

        def keep(record: dict[str, Any]) -> bool:
            if phase is not None and record.get("phase") != phase:
                return record.get("phase") in earlier
            return record.get("epoch", -1) <= epoch

        kept = [line for line, record in _records(self.path) if keep(record)]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: EpochRecord) -> None:
        """Append one record (and its numbers as TensorBoard scalars at step ``record.epoch``)."""
        append_text(self.path, record.to_json() + "\n")
        if self._writer is not None:
            for tag, value in record.scalars():
                self._writer.add_scalar(tag, value, record.epoch)
            self._writer.flush()

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self._writer is not None:
            self._writer.close()


def _records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) of every record in a metrics file, for a resume; damage is one line."""

    def damaged(why: str) -> SakdError:
        return SakdError(
            f"{str(path)!r} {why}: the metrics file is damaged; move it away to resume without "
            "the earlier epochs' records, or start over with resume=false"
        )

    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise damaged("is not a text file") from None
    lines = text.split("\n")
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):  # the unterminated last line: a write cut short
                break
            raise damaged(f"has a line that is not JSON (line {number})") from None
        if not isinstance(record, dict) or not isinstance(record.get("epoch", -1), int):
            raise damaged(f"has a line that is not an epoch record (line {number})")
        out.append((line, record))
    return out
