"""`sakd quickstart`: the three runs and one table, on a slice of the embedded data."""

from __future__ import annotations

from sakd.cli import main


def test_quickstart_prints_one_table(tmp_path, capsys):
    out = tmp_path / "qs"
    overrides = [
        "epochs=1",
        "batch_size=32",
        "data.train_limit=64",
        "data.test_limit=64",
        "progress=false",
    ]
    assert main(["quickstart", "--out", str(out), *overrides]) == 0
    printed = capsys.readouterr().out
    for row in (
        "teacher resnet32 (packaged)",
        "student alone",
        "at + kd, fixed spots",
        "at + kd, adaptive spots",
    ):
        assert f"| {row} |" in printed, row
    assert (out / "summary.md").read_text().startswith("| run |")
    for run in ("student", "fixed", "adaptive"):
        assert (out / run / "checkpoints" / "best.pt").is_file()
