"""`sakd plot` / `sakd report --plots`: PNG figures from real and fabricated runs."""

from __future__ import annotations

import struct

import pytest

from sakd.cli import main
from sakd.experiments.plot import make_plots
from sakd.experiments.report import build_report

from .conftest import fabricate_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path) -> tuple[int, int]:
    """Width and height of a PNG file, after checking its signature and IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert data[12:16] == b"IHDR", path
    assert len(data) > 10_000, (path, len(data))  # a figure with content, not an empty canvas
    return struct.unpack(">II", data[16:24])


def test_figures_from_a_real_grid(interrupted_grid, tmp_path):
    root, _ = interrupted_grid
    written = make_plots(build_report(root), tmp_path / "plots")
    names = sorted(p.name for p in written)
    assert names == [
        "accuracy-embedded-resnet32-resnet8.png",
        "gains.png",
        "spot_rates-embedded-resnet32-resnet8.png",
    ]
    for path in written:
        width, height = _png_size(path)
        assert width >= 400 and height >= 300


def test_report_with_plots_links_them(tmp_path, capsys):
    rates = [[1.0, 1.0], [0.7, 0.9], [0.5, 0.8], [0.4, 0.8]]
    for mode in ("fixed", "adaptive", "random"):
        for seed in (0, 1):
            fabricate_run(
                tmp_path / f"crd-{mode}/seed{seed}",
                "cifar100/vgg13-vgg8",
                ["distiller.name=crd", f"spots.mode={mode}", f"seed={seed}", "epochs=4"],
                [40.0 + seed, 60.0, 65.0 + (mode == "adaptive"), 66.0 - seed],
                spot_rates=rates,
            )
    assert main(["report", str(tmp_path), "--plots"]) == 0
    assert "3 figure(s)" in capsys.readouterr().out
    text = (tmp_path / "report.md").read_text()
    for name in ("spot_rates-cifar100-vgg13-vgg8", "accuracy-cifar100-vgg13-vgg8", "gains"):
        assert f"![{name}](plots/{name}.png)" in text
        _png_size(tmp_path / "plots" / f"{name}.png")
    docs = tmp_path / "docs/results"
    assert main(["report", str(tmp_path), "--plots", "--out", str(docs)]) == 0
    assert "![gains](plots/gains.png)" in (docs / "report.md").read_text()
    assert (docs / "plots/gains.png").is_file() and (docs / "report.csv").is_file()
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "again")]) == 0
    assert len(list((tmp_path / "again").glob("*.png"))) == 3


@pytest.mark.fault("config")
def test_plot_without_runs_is_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no finished runs" in err
