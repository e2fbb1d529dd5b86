"""``sakd inspect``: the trained policy per sample and class, from a run folder alone."""

from __future__ import annotations

import csv
import io

import pytest
import torch
import yaml
from tests.conftest import tiny_overrides
from tests.engine.test_user_model import USER_MODULE

from sakd.cli import main
from sakd.config import dump_config, load_config, validate_config
from sakd.data import iterate_batches
from sakd.engine.build import build_task, load_data
from sakd.engine.checkpoint import load_checkpoint
from sakd.engine.run import run
from sakd.engine.runtime import Runtime
from sakd.errors import SakdError
from sakd.experiments.inspect import inspect_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SPOTS = ["stage1", "stage2", "stage3", "logits"]


@pytest.fixture(scope="module")
def adaptive_run(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("inspect") / "adaptive"
    extra = ["distiller.name=at", "spots.mode=adaptive", "spots.homogeneous=false", "epochs=1"]
    run(load_config("quickstart", tiny_overrides(folder, *extra)))
    return folder


def _rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def _policy_probabilities(folder) -> torch.Tensor:
    """P(teacher path) of the checkpoint's policy on the train split, computed here directly."""
    cfg = validate_config(yaml.safe_load((folder / "config.yaml").read_text()))
    runtime = Runtime.create("cpu", "fp32", False)
    train_set, _ = load_data(cfg)
    task, _ = build_task(cfg, train_set, runtime)
    saved = load_checkpoint(folder / "checkpoints" / "best.pt")
    for name, module in task.checkpoint_modules().items():
        module.load_state_dict(saved["modules"][name])
    task.eval()
    probs = []
    with torch.no_grad():
        for images, _, _ in iterate_batches(train_set, 40, train=False, seed=0, epoch=0):
            t_feats, _ = task.teacher.forward_features(images)
            s_feats, _ = task.student.forward_features(images)
            logits = task.selector.policy(t_feats[-1], s_feats[-1])
            probs.append(torch.softmax(logits.double(), -1)[..., 0])
    return torch.cat(probs)


def test_inspect_writes_every_file_with_the_policy_probabilities(adaptive_run):
    result = inspect_run(adaptive_run, checkpoint="best", split="train", device="cpu")
    out = adaptive_run / "inspect"
    assert result.checkpoint_epoch == 1 and result.rates.spot_names == SPOTS
    rows = _rows(out / "decisions.csv")
    assert len(rows) == 96  # one per training image (data.train_limit)
    assert [int(r["index"]) for r in rows] == list(range(96))
    probs = torch.tensor([[float(r[f"p_teacher_{s}"]) for s in SPOTS] for r in rows])
    assert ((probs >= 0) & (probs <= 1)).all()
    torch.testing.assert_close(
        probs, _policy_probabilities(adaptive_run).float(), atol=2e-6, rtol=0
    )
    decisions = {r[f"teacher_path_{s}"] for r in rows for s in SPOTS}
    assert decisions <= {"0", "1"}
    train_labels = load_data(
        validate_config(yaml.safe_load((adaptive_run / "config.yaml").read_text()))
    )[0].labels
    assert [int(r["label"]) for r in rows] == train_labels.tolist()
    # per class × spot: one row per class plus "all", the mean of the per-sample probabilities
    table = _rows(out / "class_spot_rates.csv")
    assert len(table) == 10 + 1 and table[-1]["class"] == "all"
    assert sum(int(r["n"]) for r in table[:-1]) == 96
    for spot, name in enumerate(SPOTS):
        assert float(table[-1][f"distil_prob_{name}"]) == pytest.approx(
            float(probs[:, spot].double().mean()), abs=1e-4
        )
        shirt = [i for i, r in enumerate(rows) if r["label"] == "6"]
        assert float(table[6][f"distil_prob_{name}"]) == pytest.approx(
            float(probs[shirt, spot].double().mean()), abs=1e-4
        )
    markdown = (out / "class_spot_rates.md").read_text()
    assert "| class | n | student top-1 | teacher top-1 | stage1 | stage2 | stage3 | logits |" in (
        markdown
    )
    assert markdown.count("\n| ") == 2 + 10 + 1 - 1  # header + 10 classes + all (rule excluded)
    pngs = ["heatmap.png", *(f"samples-{s}.png" for s in SPOTS)]
    for name in pngs:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, name
    import matplotlib.image

    assert matplotlib.image.imread(out / "heatmap.png").ndim == 3
    assert "least" in result.summary and str(out) in result.summary
    assert not [p for p in adaptive_run.iterdir() if p.name.startswith(".inspect-")]


def test_inspect_on_the_test_split_and_last_checkpoint_from_the_cli(adaptive_run, capsys):
    assert main(["inspect", str(adaptive_run), "--checkpoint", "last", "--split", "test"]) == 0
    printed = capsys.readouterr().out
    assert "on the test split (64 images)" in printed and "share distilled: stage1" in printed
    assert len(_rows(adaptive_run / "inspect" / "decisions.csv")) == 64
    first = (adaptive_run / "inspect" / "decisions.csv").read_text()
    assert main(["inspect", str(adaptive_run), "--checkpoint", "last", "--split", "test"]) == 0
    assert (adaptive_run / "inspect" / "decisions.csv").read_text() == first  # fixed seed


@pytest.mark.fault("config")
@pytest.mark.parametrize(
    ("recipe", "extra", "says"),
    [
        ("quickstart", ["spots.mode=fixed"], "distils at fixed spots: there is no policy"),
        ("quickstart", ["spots.mode=random"], "distils at random spots: there is no policy"),
        ("quickstart/student", [], "trains a single network: there is no policy"),
    ],
)
def test_inspect_refuses_runs_without_a_policy(tmp_path, capsys, recipe, extra, says):
    folder = tmp_path / "run"
    folder.mkdir()
    cfg = load_config(recipe, [*extra, f"output_dir={folder}"])
    (folder / "config.yaml").write_text(dump_config(cfg))
    assert main(["inspect", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1
    assert not (folder / "inspect").exists()


def test_inspect_needs_a_run_folder_and_a_checkpoint(tmp_path):
    with pytest.raises(SakdError, match="is not a run folder"):
        inspect_run(tmp_path)
    with pytest.raises(SakdError, match="unknown device 'gpu'"):
        inspect_run(tmp_path, device="gpu")
    cfg = load_config("quickstart", ["spots.mode=adaptive", f"output_dir={tmp_path}"])
    (tmp_path / "config.yaml").write_text(dump_config(cfg))
    with pytest.raises(SakdError, match=r"best\.pt' does not exist"):
        inspect_run(tmp_path)
    assert not (tmp_path / "inspect").exists()


def test_inspect_a_user_model_run(tmp_path, monkeypatch):
    (tmp_path / "my_inspected_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = tmp_path / "user"
    model = [
        "model.name=my_inspected_models:build",
        "model.stem=stem",
        "model.stages=[layer1, layer2]",
        "model.head=fc",
    ]
    extra = ["distiller.name=at", "spots.mode=adaptive", "epochs=1", *model]
    run(load_config("quickstart", tiny_overrides(folder, *extra)))
    with pytest.raises(SakdError, match="trust_code=True"):  # a module the folder names
        inspect_run(folder, split="test")
    result = inspect_run(folder, split="test", trust_code=True)
    assert result.rates.spot_names == ["layer1", "layer2", "logits"]
    header = (folder / "inspect" / "decisions.csv").read_text().splitlines()[0]
    assert "p_teacher_layer1,p_teacher_layer2,p_teacher_logits" in header
    assert (folder / "inspect" / "samples-layer2.png").read_bytes().startswith(PNG_SIGNATURE)
