"""``sakd quickstart``: the whole story on the embedded data, on the CPU, in a few minutes.

The packaged teacher (resnet32 trained on the embedded Fashion-MNIST subset by
``sakd train quickstart/teacher``), the student alone, the student distilled at fixed spots, and
the student distilled spot-adaptively from the 50/50 start of the policy (the homogeneous start of
the authors' configs never leaves the teacher path in so short a run: see ``NOTE``). It prints
(and writes to ``summary.md``) the accuracy table, the adaptive policy's per-spot rates over the
epochs, and what ``sakd inspect`` finds in that run (which classes it distils least and most).
"""

from __future__ import annotations

import time
from pathlib import Path

from sakd.config import RunConfig, load_config
from sakd.engine.build import LOGIT_KD
from sakd.engine.checkpoint import atomic_write_text
from sakd.engine.records import EpochRecord
from sakd.engine.run import run
from sakd.engine.rundir import RunFolder
from sakd.experiments.inspect import InspectResult, extremes, inspect_run
from sakd.spot_modes import SpotMode

# (label, run folder, recipe, overrides)
PLAN = [
    ("student alone", "student", "quickstart/student", []),
    ("fixed spots", SpotMode.FIXED.value, "quickstart", [f"spots.mode={SpotMode.FIXED}"]),
    (
        "adaptive spots, 50/50 start",
        SpotMode.ADAPTIVE.value,
        "quickstart",
        [f"spots.mode={SpotMode.ADAPTIVE}", "spots.homogeneous=false"],
    ),
]
INSPECTED = SpotMode.ADAPTIVE.value

NOTE = (
    "Spot rates: the share of training samples distilled at each spot (the distiller's feature "
    "spots by name, then the logit spot), in the last epoch above and per epoch below. The "
    "adaptive run starts its policy at 50/50 (`spots.homogeneous=false`). With the homogeneous "
    "start of the authors' configs for a pair like resnet32 -> resnet8 (`sakd distill quickstart "
    "spots.mode=adaptive`, policy bias +10 towards the teacher path) every rate stays at 1.00 over "
    "a short run and the adaptive run equals the fixed one. From 50/50 the policy chooses: the "
    "routing loss rewards the teacher path wherever it lowers the routed network's cross-entropy, "
    "so the logit spot goes to 1 within an epoch; where the feature spots end depends on the seed. "
    "docs/results/README.md has a study over two students, both starts and two seeds."
)


def quickstart(out: str, overrides: list[str]) -> list[dict]:
    """Run the quick-start runs into ``out`` and print their tables; returns the table rows."""
    root = Path(out)
    rows = []
    teacher_top1 = None
    curves: dict[str, list[EpochRecord]] = {}
    for label, folder, recipe, extra in PLAN:
        run_dir = root / folder
        cfg = load_config(recipe, [*extra, *overrides, f"output_dir={run_dir}"])
        if cfg.distiller is not None:
            label = f"{loss_terms_label(cfg)}, {label}"
        print(
            f"[quickstart] {label}: {cfg.model.name}, {cfg.epochs} epochs -> {run_dir}", flush=True
        )
        started = time.perf_counter()
        summary = run(cfg)
        records = RunFolder(run_dir).read_records()
        if teacher_top1 is None:
            teacher_top1 = RunFolder(run_dir).read_info().teacher_top1
        if folder == INSPECTED and cfg.teacher is not None and cfg.spots.mode is SpotMode.ADAPTIVE:
            curves[label] = records
        rows.append(
            {
                "run": label,
                "best_top1": summary.best_top1,
                "last_top1": summary.last_top1,
                "seconds": time.perf_counter() - started,
                "spot_rates": records[-1].spot_rates if cfg.distiller is not None else None,
            }
        )
    parts = [_table(rows, teacher_top1), NOTE]
    if curves:  # unless the overrides changed the adaptive run's spot mode
        print(f"[quickstart] sakd inspect {root / INSPECTED}", flush=True)
        found = inspect_run(root / INSPECTED, split="train")
        parts += [_curves(curves), _inspected(found, root / INSPECTED)]
    text = "\n\n".join(parts)
    print(text)
    atomic_write_text(root / "summary.md", text + "\n")
    return rows


def loss_terms_label(cfg: RunConfig) -> str:
    """The run's distillation loss terms, e.g. ``at + kd`` (the distiller and the logit-KD term)."""
    assert cfg.distiller is not None
    terms = [cfg.distiller.name] + ([LOGIT_KD] if cfg.loss.kd_weight else [])
    return " + ".join(terms)


def _table(rows: list[dict], teacher_top1: float | None) -> str:
    lines = [
        "| run | best top-1 (%) | last top-1 (%) | time (s) | spot rates, last epoch |",
        "|---|---|---|---|---|",
    ]
    if teacher_top1 is not None:
        lines.append(f"| teacher resnet32 (packaged) | {teacher_top1:.2f} | – | – | – |")
    for row in rows:
        rates = row["spot_rates"]
        rates_text = " ".join(f"{k} {v:.2f}" for k, v in rates.items()) if rates else "–"
        lines.append(
            f"| {row['run']} | {row['best_top1']:.2f} | {row['last_top1']:.2f} | "
            f"{row['seconds']:.0f} | {rates_text} |"
        )
    return "\n".join(lines)


def _curves(curves: dict[str, list[EpochRecord]]) -> str:
    """Per adaptive run and epoch, the share of training samples distilled at each spot."""
    spots = next(iter(curves.values()))[0].spot_names
    lines = [
        "Share distilled per epoch (adaptive run):",
        "",
        "| run | epoch | " + " | ".join(spots) + " | test top-1 (%) |",
        "|---|---|" + "---|" * (len(spots) + 1),
    ]
    for label, records in curves.items():
        for record in records:
            rates = " | ".join(f"{record.spot_rates[s]:.3f}" for s in spots)
            lines.append(f"| {label} | {record.epoch} | {rates} | {record.test_top1:.2f} |")
    return "\n".join(lines)


def _inspected(found: InspectResult, folder: Path) -> str:
    """What ``sakd inspect`` found in the adaptive run: overall and per-class shares per spot."""
    rates = found.rates
    lines = [
        f"`sakd inspect {folder}` (best checkpoint, epoch {found.checkpoint_epoch}, "
        f"{sum(rates.counts)} training images; files in {folder / 'inspect'}):",
        "",
        "| spot | share distilled | least distilled class | most distilled class |",
        "|---|---|---|---|",
    ]
    for spot, name in enumerate(rates.spot_names):
        (low, low_v), (high, high_v) = extremes(rates, spot)
        lines.append(
            f"| {name} | {rates.overall_prob[spot]:.2f} | {low} {low_v:.2f} | {high} {high_v:.2f} |"
        )
    return "\n".join(lines)
