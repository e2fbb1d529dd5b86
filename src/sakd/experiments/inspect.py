"""``sakd inspect RUN``: where the trained policy of an adaptive run distils, per sample and per class.

The run's own configuration (``RUN/config.yaml``) rebuilds its teacher, student and selector; the
checkpoint (``best.pt`` or ``last.pt``) restores them strictly. Every image of a split then goes
through both nets in eval mode (no augmentation, running BN statistics) and through the policy:

* the probability of the teacher path at spot k is ``softmax(π_k)[0]``. It is exact, not an
  estimate: the straight-through Gumbel sample is ``one_hot(argmax((π + g) / τ))``, and by the
  Gumbel-max trick ``P(argmax(π + g) = 0) = softmax(π)[0]`` for any τ;
* the sampled decision is one such draw, from a generator seeded with ``--seed`` (not the run's
  generator), so the file is the same on every call.

In the adaptive mode a sample is distilled at a spot when it takes the teacher path; in the anti
mode when it takes the student path (1 − a). Spot names are the run's (``Task.spot_names``).

Everything is written to a temporary folder first and then moved to ``RUN/inspect/``:

* ``decisions.csv``: one row per sample (index in the split, label, teacher and student
  predictions, per spot the teacher-path probability and the sampled decision);
* ``class_spot_rates.csv`` / ``.md``: per class and spot the share distilled (mean probability and
  the sampled rate), with the class's student and teacher top-1;
* ``heatmap.png``: class × spot share distilled;
* ``samples-<spot>.png``: per spot, the images the policy distils least and most, with labels.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from sakd.config import RunConfig, config_differences
from sakd.data import ImageSet, iterate_batches
from sakd.engine.build import build_task, load_data
from sakd.engine.checkpoint import atomic_write_text, load_weights_strict
from sakd.engine.rundir import CHECKPOINTS, RunFolder, TrainingCheckpoint
from sakd.engine.runtime import Runtime
from sakd.engine.training_tasks import DistillationTask
from sakd.errors import SakdError
from sakd.spots import AdaptiveSelector, AntiSelector, sample_gumbel, straight_through_gumbel

SPLITS = ("train", "test")
GRID_SAMPLES = 16  # images per panel (least / most distilled) of a spot's figure
GRID_COLUMNS = 8
DPI = 100


@dataclass
class Decisions:
    """The policy on every sample of a split (rows in split order)."""

    spot_names: list[str]
    class_names: list[str]
    labels: torch.Tensor  # (N,) int64
    teacher_pred: torch.Tensor  # (N,) int64
    student_pred: torch.Tensor  # (N,) int64
    teacher_path_prob: torch.Tensor  # (N, K) float64: P(teacher path) at each spot
    teacher_path: torch.Tensor  # (N, K) 0/1 float: the sampled decision
    distil_on_teacher_path: bool  # adaptive: True; anti: distilled where the student path is taken

    @property
    def distil_prob(self) -> torch.Tensor:
        """(N, K) probability that the sample is distilled at each spot."""
        p = self.teacher_path_prob
        return p if self.distil_on_teacher_path else 1 - p

    @property
    def distilled(self) -> torch.Tensor:
        """(N, K) the sampled 0/1 distillation weight."""
        a = self.teacher_path
        return a if self.distil_on_teacher_path else 1 - a


@dataclass
class ClassRates:
    """Per class (rows) and spot (columns): share distilled, and the class's accuracies."""

    class_names: list[str]
    spot_names: list[str]
    counts: list[int]
    prob: list[list[float]]  # mean probability of being distilled
    sampled: list[list[float]]  # share of the sampled decisions that distil
    student_top1: list[float]
    teacher_top1: list[float]
    overall_prob: list[float]
    overall_sampled: list[float]


@dataclass
class InspectResult:
    """What ``sakd inspect`` wrote and found."""

    folder: Path
    checkpoint: Path
    checkpoint_epoch: int
    split: str
    mode: str
    rates: ClassRates
    files: list[Path]
    summary: str


def inspect_run(
    run: str | Path,
    checkpoint: str = "best",
    split: str = "train",
    seed: int = 0,
    device: str | None = None,
) -> InspectResult:
    """Run the trained policy of ``run`` over ``split`` and write ``run/inspect/``; see the module."""
    folder = Path(run)
    if checkpoint not in CHECKPOINTS:
        raise SakdError(f"unknown checkpoint {checkpoint!r}: use one of {', '.join(CHECKPOINTS)}")
    if split not in SPLITS:
        raise SakdError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if device is not None and not (device in ("auto", "cpu") or device.startswith("cuda")):
        raise SakdError(f"unknown device {device!r}: use cpu, cuda or cuda:N")
    cfg = _read_config(RunFolder(folder))
    saved = RunFolder(folder).read_checkpoint(checkpoint)
    path = saved.path
    runtime = Runtime.create(device or cfg.device, "fp32", False)
    train_set, test_set = load_data(cfg)
    task, _ = build_task(cfg, train_set, runtime)
    assert isinstance(task, DistillationTask)
    _restore(task, saved, cfg)
    data = train_set if split == "train" else test_set
    decisions = policy_decisions(task, data, runtime, cfg.eval_batch_size, seed)
    rates = class_rates(decisions)
    epoch = saved.epoch or 0
    files, summary = _write(folder, path, epoch, split, cfg.spots.mode, data, decisions, rates)
    return InspectResult(folder, path, epoch, split, cfg.spots.mode, rates, files, summary)


def _read_config(run: RunFolder) -> RunConfig:
    folder = run.path
    if not run.has_config():
        raise SakdError(
            f"{str(folder)!r} is not a run folder (no config.yaml): give the output_dir of a run"
        )
    cfg = run.read_config(stored=True)
    if cfg.teacher is None:
        raise SakdError(
            f"{str(folder)!r} trains a single network: there is no policy to inspect "
            "(inspect a run distilled with spots.mode=adaptive)"
        )
    if not cfg.spots.mode.routed:
        raise SakdError(
            f"{str(folder)!r} distils at {cfg.spots.mode} spots: there is no policy to inspect "
            "(inspect a run distilled with spots.mode=adaptive)"
        )
    return cfg


def _restore(task: DistillationTask, saved: TrainingCheckpoint, cfg: RunConfig) -> None:
    path = saved.path
    changed = config_differences(saved.config or {}, cfg)
    if changed:
        raise SakdError(
            f"{path} was written with a different configuration than config.yaml "
            f"({', '.join(changed)} differ): the run folder was changed after training"
        )
    modules = task.checkpoint_modules()
    stored = saved.modules
    if set(stored) != set(modules):
        raise SakdError(f"{path} holds modules {sorted(stored)}, expected {sorted(modules)}")
    for name, module in modules.items():
        load_weights_strict(module, stored[name], f"checkpoint {path} ({name})")


@torch.no_grad()
def policy_decisions(
    task: DistillationTask, data: ImageSet, runtime: Runtime, batch_size: int = 256, seed: int = 0
) -> Decisions:
    """The policy of ``task`` (adaptive / anti) on every sample of ``data``, in eval mode."""
    selector = task.selector
    if not isinstance(selector, AdaptiveSelector):
        raise SakdError(f"spots.mode={selector.mode}: there is no policy to inspect")
    task.eval()
    generator = torch.Generator(device=runtime.device).manual_seed(seed)
    probs, paths, teacher_pred, student_pred, labels = [], [], [], [], []
    for images, batch_labels, _ in iterate_batches(
        data, batch_size, train=False, seed=0, epoch=0, device=runtime.device
    ):
        images = runtime.prepare_images(images)
        t_feats, t_logits = task.teacher.forward_features(images)
        s_feats, s_logits = task.student.forward_features(images)
        logits = selector.policy(t_feats[-1], s_feats[-1]).float()
        probs.append(torch.softmax(logits.double(), dim=-1)[..., 0].cpu())
        noise = sample_gumbel(tuple(logits.shape), generator)
        paths.append(straight_through_gumbel(logits, noise, selector.tau)[..., 0].cpu())
        teacher_pred.append(t_logits.argmax(1).cpu())
        student_pred.append(s_logits.argmax(1).cpu())
        labels.append(batch_labels.cpu())
    return Decisions(
        spot_names=task.spot_names,
        class_names=list(data.class_names),
        labels=torch.cat(labels),
        teacher_pred=torch.cat(teacher_pred),
        student_pred=torch.cat(student_pred),
        teacher_path_prob=torch.cat(probs),
        teacher_path=torch.cat(paths),
        distil_on_teacher_path=not isinstance(selector, AntiSelector),
    )


def class_rates(decisions: Decisions) -> ClassRates:
    """Per class and spot: mean distillation probability and sampled rate; per class accuracies."""
    prob, sampled = decisions.distil_prob, decisions.distilled.double()
    labels = decisions.labels
    counts, mean_prob, mean_sampled, s_top1, t_top1 = [], [], [], [], []
    for c in range(len(decisions.class_names)):
        mask = labels == c
        n = int(mask.sum())
        counts.append(n)
        nan = [math.nan] * prob.shape[1]
        mean_prob.append(prob[mask].mean(0).tolist() if n else nan)
        mean_sampled.append(sampled[mask].mean(0).tolist() if n else nan)
        hits_s = (decisions.student_pred[mask] == c).double().mean() if n else math.nan
        hits_t = (decisions.teacher_pred[mask] == c).double().mean() if n else math.nan
        s_top1.append(100.0 * float(hits_s))
        t_top1.append(100.0 * float(hits_t))
    return ClassRates(
        class_names=decisions.class_names,
        spot_names=decisions.spot_names,
        counts=counts,
        prob=mean_prob,
        sampled=mean_sampled,
        student_top1=s_top1,
        teacher_top1=t_top1,
        overall_prob=prob.mean(0).tolist(),
        overall_sampled=sampled.mean(0).tolist(),
    )


# --------------------------------------------------------------------------------------- writing
def _write(
    folder: Path,
    checkpoint: Path,
    epoch: int,
    split: str,
    mode: str,
    data: ImageSet,
    decisions: Decisions,
    rates: ClassRates,
) -> tuple[list[Path], str]:
    """Write every file into a temporary folder, then swap it in as ``folder/inspect``."""
    target = folder / "inspect"
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise SakdError(
            f"{str(target)!r} is a link or a file, not the folder sakd inspect writes: remove it"
        )
    staging = Path(tempfile.mkdtemp(prefix=".inspect-", dir=folder))
    staging.chmod(0o755)
    try:
        names = ["decisions.csv", "class_spot_rates.csv", "class_spot_rates.md", "heatmap.png"]
        atomic_write_text(staging / names[0], decisions_csv(decisions))
        atomic_write_text(staging / names[1], rates_csv(rates))
        heading = f"{folder.name}: {mode} policy, {checkpoint.name} (epoch {epoch}), {split} split"
        atomic_write_text(staging / names[2], rates_markdown(rates, heading))
        heatmap_figure(rates, heading, staging / names[3])
        for spot, name in enumerate(decisions.spot_names):
            file = f"samples-{_slug(name)}.png"
            samples_figure(data, decisions, spot, f"{heading}\nspot {name}", staging / file)
            names.append(file)
        summary = _summary(folder, checkpoint, epoch, split, mode, rates, target)
        atomic_write_text(staging / "summary.txt", summary + "\n")
        names.append("summary.txt")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [target / name for name in names], summary


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def decisions_csv(decisions: Decisions) -> str:
    """``decisions.csv``: one row per sample; per spot ``p_teacher_<spot>`` and ``teacher_path_<spot>``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    spots = decisions.spot_names
    writer.writerow(
        [
            "index",
            "label",
            "class",
            "teacher_pred",
            "student_pred",
            *(f"p_teacher_{s}" for s in spots),
            *(f"teacher_path_{s}" for s in spots),
        ]
    )
    names = decisions.class_names
    probs = decisions.teacher_path_prob.tolist()
    paths = decisions.teacher_path.int().tolist()
    rows = zip(
        decisions.labels.tolist(),
        decisions.teacher_pred.tolist(),
        decisions.student_pred.tolist(),
        probs,
        paths,
        strict=True,
    )
    for index, (label, t_pred, s_pred, p, a) in enumerate(rows):
        writer.writerow([index, label, names[label], t_pred, s_pred, *(f"{v:.6f}" for v in p), *a])
    return buffer.getvalue()


def rates_csv(rates: ClassRates) -> str:
    """``class_spot_rates.csv``: per class (then ``all``) n, accuracies and per spot share distilled."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    spots = rates.spot_names
    writer.writerow(
        [
            "class",
            "name",
            "n",
            "student_top1",
            "teacher_top1",
            *(f"distil_prob_{s}" for s in spots),
            *(f"distil_sampled_{s}" for s in spots),
        ]
    )
    for c, name in enumerate(rates.class_names):
        writer.writerow(
            [
                c,
                name,
                rates.counts[c],
                f"{rates.student_top1[c]:.2f}",
                f"{rates.teacher_top1[c]:.2f}",
                *(f"{v:.4f}" for v in rates.prob[c]),
                *(f"{v:.4f}" for v in rates.sampled[c]),
            ]
        )
    total = sum(rates.counts)
    s_all = _weighted(rates.student_top1, rates.counts)
    t_all = _weighted(rates.teacher_top1, rates.counts)
    writer.writerow(
        [
            "all",
            "all",
            total,
            f"{s_all:.2f}",
            f"{t_all:.2f}",
            *(f"{v:.4f}" for v in rates.overall_prob),
            *(f"{v:.4f}" for v in rates.overall_sampled),
        ]
    )
    return buffer.getvalue()


def _weighted(values: list[float], counts: list[int]) -> float:
    pairs = [(v, n) for v, n in zip(values, counts, strict=True) if n]
    return sum(v * n for v, n in pairs) / max(sum(n for _, n in pairs), 1)


def rates_markdown(rates: ClassRates, heading: str) -> str:
    """``class_spot_rates.md``: the share distilled per class and spot (mean probability)."""
    spots = rates.spot_names
    out = [
        f"# Where the policy distils: {heading}",
        "",
        "Share of the class's samples distilled at each spot: the mean probability of the "
        "distilling path (exact, from the policy's logits); the sampled rate is in the CSV.",
        "",
        "| class | n | student top-1 | teacher top-1 | " + " | ".join(spots) + " |",
        "|---|---|---|---|" + "---|" * len(spots),
    ]
    for c, name in enumerate(rates.class_names):
        cells = " | ".join(f"{v:.2f}" for v in rates.prob[c])
        out.append(
            f"| {name} | {rates.counts[c]} | {rates.student_top1[c]:.1f} | "
            f"{rates.teacher_top1[c]:.1f} | {cells} |"
        )
    cells = " | ".join(f"**{v:.2f}**" for v in rates.overall_prob)
    s_all = _weighted(rates.student_top1, rates.counts)
    t_all = _weighted(rates.teacher_top1, rates.counts)
    out.append(f"| **all** | {sum(rates.counts)} | {s_all:.1f} | {t_all:.1f} | {cells} |")
    return "\n".join(out) + "\n"


def extremes(rates: ClassRates, spot: int) -> tuple[tuple[str, float], tuple[str, float]]:
    """(class, share) distilled least and most at ``spot`` (classes with samples only)."""
    shown = [
        (rates.prob[c][spot], name) for c, name in enumerate(rates.class_names) if rates.counts[c]
    ]
    low, high = min(shown), max(shown)
    return (low[1], low[0]), (high[1], high[0])


def _summary(
    folder: Path,
    checkpoint: Path,
    epoch: int,
    split: str,
    mode: str,
    rates: ClassRates,
    target: Path,
) -> str:
    lines = [
        f"inspect {folder}: {mode} policy of {checkpoint.name} (epoch {epoch}) on the {split} "
        f"split ({sum(rates.counts)} images)",
        "share distilled: "
        + ", ".join(
            f"{s} {v:.2f}" for s, v in zip(rates.spot_names, rates.overall_prob, strict=True)
        ),
    ]
    for spot, name in enumerate(rates.spot_names):
        (low, low_v), (high, high_v) = extremes(rates, spot)
        if high_v - low_v < 0.005:
            lines.append(f"  {name}: every class {low_v:.2f}")
        else:
            lines.append(f"  {name}: least {low} {low_v:.2f}, most {high} {high_v:.2f}")
    lines.append(
        f"-> {target}/ (decisions.csv, class_spot_rates.md/.csv, heatmap.png, samples-<spot>.png)"
    )
    return "\n".join(lines)


def heatmap_figure(rates: ClassRates, title: str, path: Path) -> Path:
    """Class × spot heat map of the share distilled, each cell annotated."""
    from matplotlib.figure import Figure

    rows, cols = len(rates.class_names), len(rates.spot_names)
    fig = Figure(figsize=(1.2 * cols + 3.2, 0.38 * rows + 1.8), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(rates.prob, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(cols), rates.spot_names)
    ax.set_yticks(
        range(rows), [f"{n} ({k})" for n, k in zip(rates.class_names, rates.counts, strict=True)]
    )
    for r in range(rows):
        for c in range(cols):
            value = rates.prob[r][c]
            if not math.isnan(value):
                colour = "black" if value > 0.6 else "white"
                ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xlabel("spot")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="share distilled")
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path


def samples_figure(data: ImageSet, decisions: Decisions, spot: int, title: str, path: Path) -> Path:
    """The samples distilled least (top) and most (bottom) at ``spot``, labelled with class and p."""
    from matplotlib.figure import Figure

    prob = decisions.distil_prob[:, spot]
    count = min(GRID_SAMPLES, len(prob))
    order = torch.argsort(prob, stable=True)
    panels = [("distilled least", order[:count]), ("distilled most", order.flip(0)[:count])]
    rows_per_panel = math.ceil(count / GRID_COLUMNS)
    cols = min(GRID_COLUMNS, count)
    fig = Figure(figsize=(1.25 * cols, 1.45 * 2 * rows_per_panel + 0.9), layout="constrained")
    subfigs = fig.subfigures(2, 1)
    names = decisions.class_names
    for subfig, (label, indices) in zip(subfigs, panels, strict=True):
        subfig.suptitle(label, fontsize=9)
        axes = subfig.subplots(rows_per_panel, cols, squeeze=False)
        for ax in axes.flat:
            ax.set_axis_off()
        for ax, index in zip(axes.flat, indices.tolist(), strict=False):
            ax.imshow(data.images[index].permute(1, 2, 0).cpu().numpy())
            ax.set_title(
                f"#{index} {names[int(decisions.labels[index])]}\np={float(prob[index]):.2f}",
                fontsize=6,
            )
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path
