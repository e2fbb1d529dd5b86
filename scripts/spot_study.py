"""Where does the adaptive policy distil? Spot rates over epochs and per class, on the embedded data.

    python scripts/spot_study.py                      # runs into runs/spot_study, writes docs/results/spot_study

Two students of the packaged resnet32 teacher (resnet8, wrn_16_1), each distilled with AT + KD at
adaptive spots from the homogeneous start (policy bias +10 towards the teacher path,
``spots.homogeneous=true``, seed 0) and from the 50/50 start (``spots.homogeneous=false``, seeds 0
and 1): 6 runs, then ``sakd inspect`` on each run's best checkpoint (train split). Writes, into ``--results``:

- ``spot_rates.csv`` / ``spot_rates.md``: the share of training samples distilled at each spot in
  every epoch (from metrics.jsonl), and the test top-1;
- ``spot_rates.png``: those rates against the epoch, one panel per run;
- ``classes-<run>.md`` / ``.csv`` and ``heatmap-<run>.png``: the class × spot structure that
  ``sakd inspect`` found, and ``classes.md`` with each spot's least and most distilled class;
- ``README.md``: what ran, on which machine, and how long it took.

The runs are resumable (run the command again after an interruption). Small by design (see
``SETTINGS``) so that it fits in about a quarter of an hour of CPU time.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import resource
import shutil
import time
from pathlib import Path

import torch

from sakd.config import load_config
from sakd.engine.records import read_records
from sakd.engine.run import provenance, run
from sakd.experiments.inspect import extremes, inspect_run

ROOT = Path(__file__).resolve().parents[1]
STUDENTS = ("resnet8", "wrn_16_1")
# start -> (override, seeds): the homogeneous start is run once (its policy does not move).
STARTS = {
    "homogeneous": ("spots.homogeneous=true", (0,)),
    "50-50": ("spots.homogeneous=false", (0, 1)),
}
SETTINGS = [
    "distiller.name=at",
    "spots.mode=adaptive",
    "epochs=4",
    "data.train_limit=1000",
    "data.test_limit=500",
    "progress=false",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "spot_study")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results" / "spot_study")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    facts = provenance()  # the code that runs: the commit at start
    started = time.perf_counter()
    runs = []
    for student in STUDENTS:
        for start, (override, seeds) in STARTS.items():
            for seed in seeds:
                name = f"{student}-{start}-seed{seed}"
                folder = args.runs / name
                overrides = [*SETTINGS, override, f"seed={seed}", f"model.name={student}"]
                cfg = load_config("quickstart", [*overrides, f"output_dir={folder}"])
                print(f"[spot_study] {name}", flush=True)
                if not (folder / "summary.json").is_file():
                    run(cfg)
                runs.append((name, student, start, folder, inspect_run(folder, split="train")))
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = usage.ru_utime + usage.ru_stime
    write_results(args.results, runs, seconds, cpu_seconds, args.threads, facts)


def write_results(
    out: Path, runs, seconds: float, cpu_seconds: float, threads: int, facts: dict
) -> None:
    """Every file of the study into ``out`` (see the module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, student, start, folder, _ in runs:
        for record in read_records(folder / "metrics.jsonl"):
            for spot, rate in record.spot_rates.items():
                rows.append([name, student, start, record.epoch, spot, f"{rate:.4f}"])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["run", "student", "start", "epoch", "spot", "share_distilled"])
    writer.writerows(rows)
    (out / "spot_rates.csv").write_text(buffer.getvalue())
    (out / "spot_rates.md").write_text(_rates_markdown(runs))
    _rates_figure(runs, out / "spot_rates.png")
    lines = [
        "# Per-class structure found by `sakd inspect` (best checkpoint, train split)",
        "",
        "| run | spot | share distilled (all) | least distilled class | most distilled class |",
        "|---|---|---|---|---|",
    ]
    for name, _, _, folder, result in runs:
        shutil.copy(folder / "inspect" / "class_spot_rates.md", out / f"classes-{name}.md")
        shutil.copy(folder / "inspect" / "class_spot_rates.csv", out / f"classes-{name}.csv")
        shutil.copy(folder / "inspect" / "heatmap.png", out / f"heatmap-{name}.png")
        rates = result.rates
        for spot, spot_name in enumerate(rates.spot_names):
            (low, low_v), (high, high_v) = extremes(rates, spot)
            lines.append(
                f"| {name} | {spot_name} | {rates.overall_prob[spot]:.2f} | {low} {low_v:.2f} | "
                f"{high} {high_v:.2f} |"
            )
    (out / "classes.md").write_text("\n".join(lines) + "\n")
    readme = [
        "# Spot-rate study (generated by `python scripts/spot_study.py`)",
        "",
        "Packaged resnet32 teacher → resnet8 and → wrn_16_1 on the embedded Fashion-MNIST subset, "
        "AT + KD at adaptive spots, from the homogeneous start (`spots.homogeneous=true`) and the "
        "50/50 start (`spots.homogeneous=false`); settings: `" + " ".join(SETTINGS) + "`.",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU(s) shared with other jobs, "
        f"{threads} torch thread(s); torch {facts['torch']}, sakd {facts['sakd_version']}"
        + (f" at {facts['git_commit'][:12]}" if facts["git_commit"] else ""),
        f"- wall time {seconds / 60:.1f} min, CPU time {cpu_seconds / 60:.1f} min "
        f"({len(runs)} runs and {len(runs)} `sakd inspect` calls; runs finished before, if any, "
        "were not repeated)",
        "",
        "Files: [spot_rates.md](spot_rates.md) / [.csv](spot_rates.csv) / "
        "[.png](spot_rates.png) (rates over epochs), [classes.md](classes.md) "
        "(least / most distilled class per spot), `classes-<run>.md/.csv` and "
        "`heatmap-<run>.png` (class × spot).",
        "",
        *(f"![{name}](heatmap-{name}.png)" for name, *_ in runs),
        "",
        "![spot rates](spot_rates.png)",
        "",
    ]
    (out / "README.md").write_text("\n".join(readme))


def _rates_markdown(runs) -> str:
    out = [
        "# Share of training samples distilled at each spot, per epoch",
        "",
        "From each run's metrics.jsonl (the sampled decisions of the epoch, training mode).",
        "",
    ]
    for name, _, _, folder, _ in runs:
        records = read_records(folder / "metrics.jsonl")
        spots = records[0].spot_names
        out += [
            f"## {name}",
            "",
            "| epoch | " + " | ".join(spots) + " | test top-1 |",
            "|---|" + "---|" * (len(spots) + 1),
        ]
        for record in records:
            rates = " | ".join(f"{record.spot_rates[s]:.3f}" for s in spots)
            out.append(f"| {record.epoch} | {rates} | {record.test_top1:.2f} |")
        out.append("")
    return "\n".join(out)


def _rates_figure(runs, path: Path) -> None:
    from matplotlib.figure import Figure

    cols = 3
    rows = -(-len(runs) // cols)
    fig = Figure(figsize=(4.0 * cols, 3.2 * rows + 0.6), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax, (name, _, _, folder, _) in zip(axes[: len(runs)], runs, strict=True):
        records = read_records(folder / "metrics.jsonl")
        epochs = [r.epoch for r in records]
        for spot in records[0].spot_names:
            ax.plot(epochs, [r.spot_rates[spot] for r in records], marker="o", label=spot)
        ax.set_title(name, fontsize=9)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xticks(epochs)
        ax.set_xlabel("epoch")
        ax.set_ylabel("share distilled")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Adaptive AT + KD from resnet32: share of samples distilled at each spot")
    for ax in axes[len(runs) :]:
        ax.set_visible(False)
    fig.savefig(path, dpi=100, metadata={"Software": None})


if __name__ == "__main__":
    main()
