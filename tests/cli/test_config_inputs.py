"""Crafted config values: out-of-range milestones and YAML anchor bombs fail as one bounded line."""

from __future__ import annotations

import pytest
import yaml

from sakd.cli import main
from sakd.config import MAX_VALUES, load_config, validate_config
from sakd.errors import MESSAGE_LIMIT, QUOTE_LIMIT, SakdError, quoted

# One sakd: error line is at most MESSAGE_LIMIT characters (a quoted value at most QUOTE_LIMIT).
MAX_LINE = MESSAGE_LIMIT + 100


def _anchor_bomb(levels: int, leaf_key: str = "model: {name: resnet8, stages: *top}") -> str:
    """A billion-laughs recipe: ``levels`` lists of nine aliases of the level below."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ",".join([f"*l{level - 1}"] * 9) + "]")
    lines.append(leaf_key.replace("*top", f"*l{levels - 1}"))
    return "\n".join(lines) + "\n"


def _one_bounded_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0 and err.startswith("sakd: error:"), err[:500]
    assert "Traceback" not in err and len(err) < MAX_LINE, err[:500]
    assert len(captured.out) < MAX_LINE
    return err


@pytest.mark.fault("config")
@pytest.mark.parametrize(
    ("overrides", "outside"),
    [
        (["schedule.milestones=[-5,150]"], "[-5]"),
        (["schedule.milestones=[150,300]"], "[300]"),
        (["schedule.milestones=[0]"], "[0]"),
        (["schedule.reference_epochs=100"], "[150, 180, 210]"),
    ],
)
def test_milestones_outside_the_reference_schedule_are_one_line(
    tmp_path, capsys, overrides, outside
):
    out = tmp_path / "r"
    err = _one_bounded_line(
        capsys, ["train", "quickstart/student", f"output_dir={out}", *overrides]
    )
    assert f"milestones {outside} lie outside 1..reference_epochs" in err
    assert not out.exists()


def test_milestones_at_the_ends_of_the_reference_schedule_are_accepted():
    cfg = load_config("quickstart/student", ["schedule.milestones=[1,240]", "epochs=24"])
    assert cfg.schedule.scaled_milestones(cfg.epochs) == [1, 24]


@pytest.mark.fault("config")
def test_an_anchor_bomb_recipe_fails_fast_without_being_expanded(tmp_path, capsys):
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(_anchor_bomb(9))  # 9**9 strings once expanded
    assert recipe.stat().st_size < 1024
    out = tmp_path / "r"
    err = _one_bounded_line(capsys, ["train", str(recipe), f"output_dir={out}"])
    assert f"expands to more than {MAX_VALUES} values (repeated YAML anchors/aliases)" in err
    assert not out.exists()
    data = yaml.safe_load(recipe.read_text())
    with pytest.raises(SakdError, match="expands to more than"):
        validate_config(data, source="run config.yaml", stored=True)


@pytest.mark.fault("config")
def test_a_value_under_the_size_limit_is_quoted_truncated(tmp_path, capsys):
    recipe = tmp_path / "small_bomb.yaml"
    recipe.write_text(_anchor_bomb(4, "model: {name: *top}"))  # 9**4 strings: under the limit
    err = _one_bounded_line(capsys, ["train", str(recipe), f"output_dir={tmp_path / 'r'}"])
    assert "key 'model.name': Input should be a valid string" in err
    assert err.endswith("... (truncated))") and len(err) < QUOTE_LIMIT + 200


@pytest.mark.fault("config")
def test_a_huge_override_is_quoted_truncated(tmp_path, capsys):
    err = _one_bounded_line(
        capsys,
        ["train", "quickstart/student", f"output_dir={tmp_path}", "data.name=" + "x" * 10**6],
    )
    assert "(truncated)" in err


def test_quoted_is_repr_up_to_its_limit():
    for value in ([1, "a", (2,), {"x": 3.5}], (1, 2), None, "it's"):
        assert quoted(value) == repr(value)
    long = quoted("y" * 10**6)
    assert long.endswith("... (truncated)") and len(long) <= QUOTE_LIMIT + len("... (truncated)")
    looped: list = []
    looped.append(looped)
    assert quoted(looped).endswith("... (truncated)")
