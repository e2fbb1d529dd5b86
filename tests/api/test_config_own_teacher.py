"""Own teachers in configs: the teacher takes the student's model keys; user files use packaged bases."""

from __future__ import annotations

import pytest

from sakd.cli import main
from sakd.config import ModelConfig, TeacherConfig, load_config
from sakd.errors import SakdError

from ..conftest import tiny_overrides


def test_teacher_config_has_every_model_key():
    assert set(ModelConfig.model_fields) <= set(TeacherConfig.model_fields)
    cfg = load_config(
        "quickstart",
        [
            "teacher.name=pkg.nets:teacher",
            "teacher.stages=[layer1, layer2]",
            "teacher.head=fc",
            "teacher.stem=bn1",
            "teacher.checkpoint=t.pt",
        ],
    )
    assert cfg.teacher.stages == ["layer1", "layer2"] and cfg.teacher.head == "fc"
    assert cfg.teacher.stem == "bn1" and cfg.teacher.checkpoint == "t.pt"


def test_user_recipe_builds_on_a_packaged_base(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: quickstart/student\noutput_dir: runs/mine\nepochs: 3\n")
    cfg = load_config(str(mine))
    assert cfg.model.name == "resnet8" and cfg.epochs == 3 and cfg.name == "quickstart-student"
    # A file next to the recipe wins over a packaged recipe of the same name.
    (tmp_path / "quickstart").mkdir()
    (tmp_path / "quickstart" / "student.yaml").write_text("model: {name: resnet20}\n")
    mine.write_text("base: quickstart/student.yaml\n")
    assert load_config(str(mine)).model.name == "resnet20"
    (tmp_path / "quickstart" / "student.yaml").unlink()
    assert load_config(str(mine)).model.name == "resnet8"


@pytest.mark.fault("config")
def test_unknown_base_is_one_line(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: quickstart/nothing\n")
    with pytest.raises(SakdError, match="neither a file next to the recipe .* nor a packaged"):
        load_config(str(mine))


@pytest.mark.fault("teacher")
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("teacher.checkpoint=null", "teacher 'resnet32' has no weights: set teacher.checkpoint"),
        ("teacher.name=object:my.Net", "was a Python object passed to sakd.train/sakd.distill"),
    ],
)
def test_teacher_without_weights_or_as_recorded_object_is_one_line(
    tmp_path, capsys, override, message
):
    code = main(["distill", "quickstart", *tiny_overrides(tmp_path / "run", override)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
