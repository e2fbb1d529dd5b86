"""Project a full run's wall time from the measured epochs of ``sakd distill`` (gpu_check step 3).

    python benchmarks/project_epochs.py DIR --epochs 240

reads ``DIR/<precision>-metrics.jsonl`` and ``-summary.json`` of short runs and prints, per
precision, each measured epoch's training seconds and images/s and the projected time of
``--epochs`` epochs: the first epoch (cuDNN autotuning, first compilations) plus the mean of the
later ones for every further epoch, plus, for every epoch, the run's other time per epoch
(evaluation, checkpoints: the summary's wall seconds minus the epochs' training seconds, divided
by the epochs). Writes the same as JSON into ``DIR/projection.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sakd.engine.records import read_records

TARGET_MINUTES = 30.0


def project(records: list, wall_seconds: float | None, epochs: int) -> dict:
    """Seconds of each measured epoch and the projected minutes of ``epochs`` epochs."""
    seconds = [r.epoch_seconds for r in records]
    steady = seconds[1:] or seconds
    per_epoch = sum(steady) / len(steady)
    other = max(0.0, (wall_seconds - sum(seconds)) / len(seconds)) if wall_seconds else 0.0
    return {
        "epoch_seconds": seconds,
        "images_per_sec": [r.images_per_sec for r in records],
        "other_seconds_per_epoch": other,
        "projected_epochs": epochs,
        "projected_minutes": (seconds[0] + per_epoch * (epochs - 1) + other * epochs) / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--epochs", type=int, default=240)
    args = parser.parse_args()
    results = {}
    for metrics in sorted(args.dir.glob("*-metrics.jsonl")):
        precision = metrics.name.removesuffix("-metrics.jsonl")
        records = read_records(metrics)
        summary = args.dir / f"{precision}-summary.json"
        wall = json.loads(summary.read_text())["seconds"] if summary.is_file() else None
        if records:
            results[precision] = project(records, wall, args.epochs)
    if not results:
        raise SystemExit(f"no *-metrics.jsonl with a finished epoch in {args.dir}")
    lines = [
        "| precision | training seconds per epoch | images/s | eval + checkpoint s/epoch | "
        f"projected minutes ({args.epochs} epochs) | vs 30-minute target |",
        "|---|---|---|---|---|---|",
    ]
    for precision, result in results.items():
        minutes = result["projected_minutes"]
        lines.append(
            f"| {precision} | {', '.join(f'{s:.1f}' for s in result['epoch_seconds'])} | "
            f"{', '.join(f'{v:.0f}' for v in result['images_per_sec'])} | "
            f"{result['other_seconds_per_epoch']:.1f} | {minutes:.1f} | "
            f"{'met' if minutes <= TARGET_MINUTES else f'missed by {minutes - TARGET_MINUTES:.1f} min'} |"
        )
    print("\n".join(lines))
    (args.dir / "projection.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
