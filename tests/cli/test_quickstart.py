"""`sakd quickstart`: the three runs, their tables and `sakd inspect`, on a slice of the embedded data."""

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
        "at + kd, adaptive spots, 50/50 start",
    ):
        assert f"| {row} |" in printed, row
    # the adaptive policies' rates per epoch, by spot name, and what `sakd inspect` found
    assert "| run | epoch | stage1 | stage2 | stage3 | logits | test top-1 (%) |" in printed
    assert "| at + kd, adaptive spots, 50/50 start | 1 | " in printed
    assert "| spot | share distilled | least distilled class | most distilled class |" in printed
    assert (out / "adaptive" / "inspect" / "decisions.csv").is_file()
    assert (out / "summary.md").read_text().startswith("| run |")
    # the seed count and the test set's binomial noise beside the table
    assert "One run per row (seed 0): no interval" in printed
    assert "The test set has 64 images" in printed
    for run in ("student", "fixed", "adaptive"):
        assert (out / run / "checkpoints" / "best.pt").is_file()
