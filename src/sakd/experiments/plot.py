"""``sakd plot DIR``: PNG figures of the runs under DIR (matplotlib, no display needed).

- ``spot_rates-<dataset>-<teacher>-<student>.png``: per distiller, the fraction of samples the
  adaptive runs distil at each spot (by name, e.g. ``stage2 (32×16×16)``) against the 1-based
  epoch (the paper's analysis figure), mean over seeds with the min–max band;
- ``accuracy-<dataset>-<teacher>-<student>.png``: per distiller, test top-1 against the epoch for
  each spot mode, mean over seeds with a ±1 std band;
- ``gains.png``: per pair, each mode's gain over ``fixed`` per distiller (best epoch, paired by
  seed), mean with ±1 std error bars, and the paper's adaptive gain as a black diamond.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from sakd.errors import SakdError
from sakd.experiments.aggregate import MODE_ORDER, Cell, Report, build_report
from sakd.spot_modes import SpotMode

MODE_COLOURS = {
    SpotMode.FIXED: "tab:blue",
    SpotMode.ADAPTIVE: "tab:red",
    SpotMode.RANDOM: "tab:gray",
    SpotMode.ANTI: "tab:green",
}
PANEL_COLUMNS = 5
DPI = 110
FEW_EPOCHS = 10  # up to this many epochs: markers, error bars and side-by-side points per line


def make_plots(report: Report, out: str | Path | None = None) -> list[Path]:
    """Write every figure of ``report`` into ``out`` (default ``<report folder>/plots``)."""
    folder = Path(out) if out is not None else report.root / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    pairs: dict[tuple[str, str, str], list[Cell]] = {}
    for cell in report.cells:
        if cell.runs():
            pairs.setdefault((cell.key.dataset, cell.key.teacher or "", cell.key.student), [])
            pairs[(cell.key.dataset, cell.key.teacher or "", cell.key.student)].append(cell)
    for (dataset, teacher, student), cells in pairs.items():
        slug = f"{dataset}-{teacher}-{student}"
        title = f"{dataset}: {teacher} → {student}"
        adaptive = [c for c in cells if any(r.spot_rates for r in c.get(SpotMode.ADAPTIVE).runs)]
        if adaptive:
            written.append(_spot_rates_figure(adaptive, title, folder / f"spot_rates-{slug}.png"))
        written.append(_accuracy_figure(cells, title, folder / f"accuracy-{slug}.png"))
    if any(c.gain(m).n for c in report.cells for m in MODE_ORDER[1:]):
        written.append(_gains_figure(pairs, folder / "gains.png"))
    return written


def plot_dir(root: str | Path, out: str | Path | None = None) -> list[Path]:
    """Collect the runs under ``root`` and write their figures; returns the files written."""
    report = build_report(root)
    if not report.results:
        raise SakdError(f"no finished runs under {str(root)!r}: nothing to plot")
    return make_plots(report, out)


def _panels(count: int, title: str, height: float = 2.8):
    from matplotlib.figure import Figure

    cols = min(PANEL_COLUMNS, count)
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(max(5.0, 3.4 * cols), height * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig, list(axes.flat[:count])


def _spot_rates_figure(cells: list[Cell], title: str, path: Path) -> Path:
    fig, axes = _panels(len(cells), f"{title}\nshare of samples distilled at each spot (adaptive)")
    for ax, cell in zip(axes, cells, strict=True):
        runs = [r for r in cell.get(SpotMode.ADAPTIVE).runs if r.spot_rates]
        curves = [r.spot_rates for r in runs]
        epochs = min(len(c) for c in curves)
        names = list(curves[0][0])
        curves = [c for c in curves if list(c[0]) == names]
        labels = runs[0].spot_labels
        for spot, name in enumerate(names):
            values = [[curve[e][name] for curve in curves] for e in range(epochs)]
            label = labels.get(name, name)
            mean = [statistics.fmean(v) for v in values]
            low, high = [min(v) for v in values], [max(v) for v in values]
            _line(ax, epochs, spot, len(names), mean, low, high, label=label)
        ax.set_title(f"{cell.key.distiller} (n={len(curves)})")
        ax.set_ylim(-0.03, 1.03)
        _epoch_axis(ax, epochs)
        ax.set_ylabel("distilled fraction")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def _accuracy_figure(cells: list[Cell], title: str, path: Path) -> Path:
    fig, axes = _panels(len(cells), f"{title}\ntest top-1 per epoch (mean ± std over seeds)")
    for ax, cell in zip(axes, cells, strict=True):
        shown = 1
        for mode in MODE_ORDER:
            curves = [r.curve for r in cell.get(mode).runs]
            if not curves:
                continue
            epochs = min(len(c) for c in curves)
            columns = [[c[e] for c in curves] for e in range(epochs)]
            mean = [statistics.fmean(v) for v in columns]
            std = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in columns]
            low = [m - s for m, s in zip(mean, std, strict=True)]
            high = [m + s for m, s in zip(mean, std, strict=True)]
            slot = MODE_ORDER.index(mode)
            label = f"{mode} (n={len(curves)})"
            _line(ax, epochs, slot, len(MODE_ORDER), mean, low, high, label, MODE_COLOURS[mode])
            shown = max(shown, epochs)
        ax.set_title(cell.key.distiller or "")
        _epoch_axis(ax, shown)
        ax.set_ylabel("test top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def _line(ax, epochs, slot, slots, mean, low, high, label, colour=None) -> None:
    """One curve against the epoch with its band; few epochs: points side by side with error bars."""
    x = list(range(1, epochs + 1))
    if epochs > FEW_EPOCHS:
        (line,) = ax.plot(x, mean, color=colour, label=label)
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15, lw=0)
        return
    shift = (slot - (slots - 1) / 2) * 0.06
    below = [m - lo for m, lo in zip(mean, low, strict=True)]
    above = [hi - m for m, hi in zip(mean, high, strict=True)]
    ax.errorbar(
        [v + shift for v in x],
        mean,
        yerr=[below, above],
        color=colour,
        marker="o",
        ms=4,
        capsize=3,
        label=label,
    )


def _epoch_axis(ax, epochs: int) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(0.5, epochs + 0.5)
    if epochs <= FEW_EPOCHS:
        ax.set_xticks(range(1, epochs + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def _gains_figure(pairs: dict[tuple[str, str, str], list[Cell]], path: Path) -> Path:
    from matplotlib.figure import Figure

    shown = {k: v for k, v in pairs.items() if any(c.gain(m).n for c in v for m in MODE_ORDER[1:])}
    widest = max(len(v) for v in shown.values())
    fig = Figure(figsize=(max(6.5, 0.9 * widest + 2), 3.0 * len(shown) + 0.8), layout="constrained")
    axes = fig.subplots(len(shown), 1, squeeze=False)[:, 0]
    fig.suptitle("Top-1 gain over fixed spots at the best epoch\n(mean ± std over seeds, paired)")
    for ax, ((dataset, teacher, student), cells) in zip(axes, shown.items(), strict=True):
        modes = [m for m in MODE_ORDER[1:] if any(c.gain(m).n for c in cells)]
        width = min(0.8 / len(modes), 0.35)
        for i, mode in enumerate(modes):
            gains = [c.gain(mode) for c in cells]
            x = [j + (i - (len(modes) - 1) / 2) * width for j in range(len(cells))]
            bars = ax.bar(
                x,
                [math.nan if g.mean is None else g.mean for g in gains],
                width,
                yerr=[g.std or 0.0 for g in gains],
                capsize=3,
                color=MODE_COLOURS.get(mode),
                label=f"{mode} − fixed",
            )
            ax.bar_label(bars, fmt="%+.2f", fontsize=7, padding=2)
        paper = [(j, c.published()) for j, c in enumerate(cells)]
        marks = [(j, p.gain) for j, p in paper if p is not None and p.gain is not None]
        if marks:
            ax.scatter(
                [j for j, _ in marks],
                [g for _, g in marks],
                marker="D",
                s=22,
                color="black",
                zorder=3,
                label="paper adaptive − fixed",
            )
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_xlim(-0.75, len(cells) - 0.25)
        ax.margins(y=0.15)
        ax.set_xticks(range(len(cells)), [c.key.distiller or "" for c in cells])
        ax.set_ylabel("top-1 gain (points)")
        ax.set_title(f"{dataset}: {teacher} → {student}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path
