"""``sakd reproduce --teachers DIR``: a grid takes the published teachers instead of training any."""

from __future__ import annotations

import pytest

from sakd.cli import main
from sakd.errors import SakdError
from sakd.experiments.grid import GridSpec, load_grid, plan_grid

# RepDistiller's scripts/fetch_pretrained_teachers.sh: save/models/<name>_vanilla/ckpt_epoch_240.pth
# for these six; mdistiller's cifar_teachers.tar holds the same folders.
PUBLISHED = ["resnet56", "resnet110", "resnet32x4", "vgg13", "wrn_40_2", "ResNet50"]


def _teachers(root, names=PUBLISHED):
    for name in names:
        folder = root / f"{name}_vanilla"
        folder.mkdir(parents=True)
        (folder / "ckpt_epoch_240.pth").write_bytes(b"")
    return root


@pytest.mark.parametrize("table", ["R1", "R2"])
def test_every_teacher_of_a_paper_grid_comes_from_the_folder(tmp_path, table):
    teachers = _teachers(tmp_path / "cifar_teachers")
    spec, name = load_grid(table)
    spec = spec.model_copy(update={"distillers": ["kd"], "modes": ["fixed"], "seeds": [0]})
    plan = plan_grid(spec, name, teachers_dir=teachers)
    for job in plan.teachers:
        folder = "ResNet50" if job.name == "resnet50" else job.name
        assert job.checkpoint == str(teachers / f"{folder}_vanilla" / "ckpt_epoch_240.pth")
        assert job.train_config is None  # nothing to train
    assert {r.config.teacher.checkpoint for r in plan.runs} == {t.checkpoint for t in plan.teachers}


@pytest.mark.fault("teacher")
def test_a_teacher_missing_from_the_folder_is_named(tmp_path, capsys):
    teachers = _teachers(tmp_path / "cifar_teachers", ["resnet56", "resnet110", "vgg13"])
    spec, name = load_grid("R1")
    with pytest.raises(SakdError) as caught:
        plan_grid(spec.model_copy(update={"seeds": [0]}), name, teachers_dir=teachers)
    text = str(caught.value)
    for missing in ("resnet32x4_vanilla", "wrn_40_2_vanilla"):
        assert f"{teachers / missing / 'ckpt_epoch_240.pth'}" in text
    assert "resnet56_vanilla" not in text
    assert main(["reproduce", "R1", "--teachers", str(teachers), "--dry-run"]) == 2
    assert "the published resnet32x4 teacher is not at" in capsys.readouterr().err


def test_dry_run_lists_the_published_teachers_as_present(tmp_path, capsys):
    teachers = _teachers(tmp_path / "t")
    assert main(["reproduce", "R1", "--teachers", str(teachers), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"teacher resnet32x4: {teachers}/resnet32x4_vanilla/ckpt_epoch_240.pth [present]" in out


def test_a_grid_may_name_the_teacher_in_repdistillers_spelling(tmp_path):
    teachers = _teachers(tmp_path / "t", ["ResNet50"])
    spec = GridSpec.model_validate(
        {
            "pairs": [{"recipe": "cifar100/resnet50-vgg8", "teacher": "ResNet50"}],
            "distillers": ["kd"],
            "modes": ["fixed"],
        }
    )
    plan = plan_grid(spec, "aliases", teachers_dir=teachers)
    (job,) = plan.teachers
    assert job.checkpoint == str(teachers / "ResNet50_vanilla" / "ckpt_epoch_240.pth")
    assert plan.runs[0].config.teacher.name == "ResNet50"
