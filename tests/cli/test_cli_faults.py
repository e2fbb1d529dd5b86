"""Bad input and faults at the command line: one line, non-zero exit, no traceback."""

from __future__ import annotations

import datetime
import json
import pickle
import sys

import pytest
import torch

from sakd.cli import _distributed_timeout, main, parse_args
from sakd.engine import distributed
from sakd.engine.checkpoint import FORMAT, save_checkpoint

from ..conftest import tiny_overrides


def _fails_cleanly(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("sakd: error:") and needle in err, err
    assert "Traceback" not in err and "weights_only" not in err
    return err


@pytest.mark.fault("config")
@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("epochs=true", "key 'epochs': Value error, must be a number, not true/false"),
        ("seed=123456789012345678901234567890", "key 'seed'"),
        ("lr=.inf", "finite number"),
        ("lr=1e999", "finite number"),
        ("data.image_size=100000", "key 'data.image_size'"),
    ],
)
def test_bad_numbers_are_one_line(tmp_path, capsys, override, needle):
    _fails_cleanly(
        capsys, ["train", "quickstart/student", f"output_dir={tmp_path / 'r'}", override], needle
    )
    assert not (tmp_path / "r").exists()


@pytest.mark.fault("config")
def test_binary_and_deeply_nested_recipes_are_one_line(tmp_path, capsys):
    binary, deep = tmp_path / "binary.yaml", tmp_path / "deep.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    deep.write_text("model: " + "[" * 5000 + "]" * 5000)
    _fails_cleanly(capsys, ["train", str(binary)], "is not a text file")
    _fails_cleanly(capsys, ["train", str(deep)], "nested too deeply")


@pytest.mark.fault("user-code")
def test_a_user_factory_with_the_wrong_signature_is_one_line(tmp_path, capsys):
    argv = [
        "train",
        "quickstart/student",
        f"output_dir={tmp_path / 'r'}",
        "model.name=math:sqrt",
        "model.stages=[a]",
        "model.head=b",
    ]
    _fails_cleanly(capsys, argv, "it must accept num_classes=N")


def _sakd_checkpoint(tmp_path, name, **content):
    path = tmp_path / name
    save_checkpoint(path, content)
    return str(path)


@pytest.mark.fault("stored-code")
def test_eval_of_crafted_weights_only_files_is_one_line(tmp_path, capsys):
    weights = {"conv.weight": torch.zeros(1)}
    config = {"model": {"name": "resnet8"}, "data": {"name": "embedded", "test_limit": 8}}
    crafted = [
        (_sakd_checkpoint(tmp_path, "noconfig.pt"), ["model.name=resnet8"], "no configuration"),
        (_sakd_checkpoint(tmp_path, "listconfig.pt", config=[1, 2]), [], "no configuration"),
        (_sakd_checkpoint(tmp_path, "nomodules.pt", config=config), [], "no student weights"),
        (
            _sakd_checkpoint(tmp_path, "intmodules.pt", config=config, modules=5),
            [],
            "no student weights",
        ),
        (
            _sakd_checkpoint(tmp_path, "badstate.pt", config=config, modules={"student": weights}),
            [],
            "does not fit the architecture",
        ),
    ]
    for path, extra, needle in crafted:
        _fails_cleanly(capsys, ["eval", path, *extra], needle)
    bare = tmp_path / "bare.pt"
    torch.save({"model": {"a": 1, "b": "x"}}, bare)
    _fails_cleanly(capsys, ["eval", str(bare), "model.name=resnet8"], "no student weights")
    torch.save({"model": {1: torch.zeros(1)}}, bare)
    _fails_cleanly(capsys, ["eval", str(bare), "model.name=resnet8"], "no student weights")


@pytest.mark.fault("stored-code")
def test_eval_never_imports_a_module_named_by_the_checkpoint(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "planted_module.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef factory(num_classes):\n    raise SystemExit\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = {
        "format": FORMAT,
        "config": {
            "model": {"name": "planted_module:factory", "stages": ["a"], "head": "b"},
            "data": {"name": "embedded"},
        },
        "modules": {"student": {"w": torch.zeros(1)}},
    }
    path = tmp_path / "planted.pt"
    torch.save(config, path)
    err = _fails_cleanly(capsys, ["eval", str(path)], "--trust-code")
    assert "model.name=planted_module:factory" in err
    assert not marker.exists() and "planted_module" not in sys.modules


class _Code:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.fault("stored-code")
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_checkpoint_with_code_is_refused_without_suggesting_weights_only_false(tmp_path, capsys):
    path = tmp_path / "code.pt"
    with open(path, "wb") as handle:
        pickle.dump({"model": _Code()}, handle)
    torch.save({"model": _Code()}, tmp_path / "code2.pt")
    for name in ("code.pt", "code2.pt"):
        err = _fails_cleanly(capsys, ["eval", str(tmp_path / name)], "cannot be loaded safely")
        assert "pickled code ran" not in capsys.readouterr().out and "False" not in err


def test_overrides_may_follow_options():
    args = parse_args(["report", "runs", "--grid", "R1", "epochs=1", "data.train_limit=9"])
    assert args.grid == "R1" and args.overrides == ["epochs=1", "data.train_limit=9"]
    args = parse_args(["reproduce", "R1", "--shard", "0/2", "epochs=1"])
    assert args.shard == "0/2" and args.overrides == ["epochs=1"]
    with pytest.raises(SystemExit):
        parse_args(["models", "epochs=1"])


def test_a_complete_run_started_again_says_so_and_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "quickstart/student", *tiny_overrides(out, "epochs=1")]
    assert main(argv) == 0
    capsys.readouterr()
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".sakd.lock"}
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "already holds this run, complete" in printed and "nan" not in printed
    assert {p: p.read_bytes() for p in files} == files


@pytest.mark.fault("data-parallel")
def test_process_group_collectives_have_a_bounded_timeout(monkeypatch):
    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv(distributed.COLLECTIVE_TIMEOUT_ENV, "42")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda *a, **k: seen.update(k))
    monkeypatch.setattr(distributed.atexit, "register", lambda f: None)
    assert distributed.join_launch("cpu") == "cpu"
    assert seen["timeout"] == datetime.timedelta(seconds=42)
    monkeypatch.setattr(distributed, "rank_and_world_size", lambda: (1, 2))
    line = _distributed_timeout(RuntimeError("[gloo] Timed out waiting 42000ms for recv"))
    assert line.startswith("rank 1 of 2 waited 42 s") and "\n" not in line
    assert _distributed_timeout(RuntimeError("an unrelated bug")) is None


@pytest.mark.fault("divergence")
def test_non_finite_distiller_parameters_are_one_line(tmp_path, capsys):
    argv = ["distill", "quickstart", f"output_dir={tmp_path / 'r'}", "distiller.params.p=.inf"]
    _fails_cleanly(capsys, argv, "distiller.params.p: Input should be a finite number")
    assert not (tmp_path / "r").exists()


@pytest.mark.fault("run-folder")
@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (bytes(range(256)) * 4, "is not a text file"),
        (b"model: " + b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b"model:\n  name: resnet8\n" + b"x: " + b"{a: " * 3000 + b"1" + b"}" * 3000, "nested"),
    ],
)
def test_inspect_of_a_garbage_or_deeply_nested_config_yaml_is_one_line(
    tmp_path, capsys, content, needle
):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_bytes(content)
    _fails_cleanly(capsys, ["inspect", str(run)], needle)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]
    assert main(["report", str(tmp_path)]) == 0
    assert "config.yaml cannot be read" in (tmp_path / "report.md").read_text()


@pytest.mark.fault("config")
@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["eval"], "required: checkpoint (usage: sakd eval"),
        (["export"], "required: run, --out (usage: sakd export"),
        (["export", "runs/x"], "required: --out (usage: sakd export"),
        (["export", "runs/x", "--out", "s.pt", "--checkpoint", "first"], "invalid choice: 'first'"),
        # Unknown flags and extra words: the command's own usage, not the top-level one.
        (["eval", "x.pt", "--bogus"], "unrecognized arguments: --bogus (usage: sakd eval"),
        (["export", "runs/x", "extra", "--out", "s.pt"], "arguments: extra (usage: sakd export"),
        (["inspect", "runs/x", "a=b"], "unrecognized arguments: a=b (usage: sakd inspect"),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, needle):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sakd: error:") and "\n" not in err and needle in err, err


@pytest.mark.fault("config")
def test_eval_of_a_folder_names_the_checkpoint_file_to_give(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.pt").write_bytes(b"")
    err = _fails_cleanly(capsys, ["eval", str(run)], "is a folder: give a checkpoint file")
    assert f"for a run folder: {run / 'checkpoints' / 'best.pt'}" in err
    err = _fails_cleanly(capsys, ["eval", str(tmp_path)], "is a folder")
    assert "RUN/checkpoints/best.pt" in err


def test_eval_resolves_the_sakd_prefix_like_teacher_paths(capsys):
    argv = ["eval", "sakd:assets/quickstart_teacher.pt", "data.test_limit=64"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "resnet32" and result["test_size"] == 64
    assert (
        result["checkpoint"].endswith("quickstart_teacher.pt")
        and "sakd:" not in result["checkpoint"]
    )


@pytest.mark.fault("config")
@pytest.mark.parametrize("ref", ["sakd:../../etc/passwd", "sakd:/etc/passwd", "sakd:assets/../.."])
def test_a_sakd_path_that_leaves_the_package_is_one_line(ref, capsys):
    err = _fails_cleanly(capsys, ["eval", ref], "leaves the sakd package")
    assert "give other files by their own path" in err
