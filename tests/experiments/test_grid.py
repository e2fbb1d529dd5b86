"""Grid files and the paper's tables: validation lists every bad entry before anything runs."""

from __future__ import annotations

import pytest
import yaml

from sakd.cli import main
from sakd.config import dump_config
from sakd.errors import SakdError
from sakd.experiments.grid import GridSpec, load_grid, plan_grid

from .conftest import write_grid

PAPER_DISTILLERS = ["fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ft", "nst", "crd"]


@pytest.mark.parametrize(
    ("table", "dataset", "teachers"),
    [
        ("R1", "cifar100", {"resnet56", "resnet110", "resnet32x4", "vgg13", "wrn_40_2"}),
        ("R2", "cifar100", {"vgg13", "resnet50", "resnet32x4", "wrn_40_2"}),
        ("R3", "tiny-imagenet", {"resnet56", "resnet110", "vgg13", "wrn_40_2"}),
    ],
)
def test_paper_tables_are_every_pair_by_ten_distillers_by_two_modes(table, dataset, teachers):
    spec, name = load_grid(table.lower())
    assert name == table
    assert spec.distillers == PAPER_DISTILLERS and spec.modes == ["fixed", "adaptive"]
    assert len(spec.pairs) == 5 and len(spec.seeds) >= 3
    # Every pair x distiller validates in the routed mode (the stricter one); one seed is enough.
    reduced = spec.model_copy(update={"modes": ["adaptive"], "seeds": [0]})
    plan = plan_grid(reduced, name)
    assert len(plan.runs) == 50
    assert {r.config.data.name for r in plan.runs} == {dataset}
    assert {t.name for t in plan.teachers} == teachers
    # Teachers that are not there are trained with the dataset's train recipe into the path the
    # pair recipes read.
    for job in plan.teachers:
        assert job.train_recipe == f"{dataset}/train/{job.name}"
        assert job.train_config.output_dir == str(job.run_dir)
        assert job.checkpoint == f"runs/{dataset}/train/{job.name}/seed0/checkpoints/best.pt"
    first = plan.runs[0].config
    assert first.output_dir.startswith(f"runs/{dataset}/") and first.output_dir.endswith("seed0")


@pytest.mark.fault("config")
def test_a_bad_grid_lists_every_bad_entry_and_runs_nothing(tmp_path, capsys):
    grid = write_grid(
        tmp_path / "bad.yaml",
        pairs=[
            "quickstart",
            {"recipe": "quickstart", "student": "resnet9000"},
            "no/such-recipe",
            {"teacher": "resnet32"},
        ],
        distillers=["at", "magic", "kd", "alchemy"],
        modes=["fixed", "often"],
        overrides=["seed=3", "colour=blue", "epochs=1"],
    )
    with pytest.raises(SakdError) as caught:
        plan_grid(*load_grid(str(grid)), root=tmp_path)
    message = str(caught.value)
    for needle in (
        "'magic'",
        "'alchemy'",
        "'often'",
        "'resnet9000'",
        "'no/such-recipe'",
        "'seed=3'",
        "'colour'",
        "give recipe",
    ):
        assert needle in message, needle
    assert "\n" not in message
    assert main(["reproduce", str(grid), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'alchemy'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.fault("config")
def test_malformed_grid_files(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("pairs: [quickstart]\ndistillers: [kd]\nsedes: [0]\n")
    with pytest.raises(SakdError, match="sedes"):
        load_grid(str(path))
    path.write_text("pairs: [quickstart\n")
    with pytest.raises(SakdError, match="not valid YAML"):
        load_grid(str(path))
    with pytest.raises(SakdError, match="neither a paper table"):
        load_grid(str(tmp_path / "none.yaml"))
    with pytest.raises(SakdError, match="more than once"):
        plan_grid(GridSpec(pairs=["quickstart"], distillers=["kd", "kd"]), "g")


@pytest.mark.fault("config")
def test_runs_sharing_a_folder_are_refused(tmp_path):
    spec = GridSpec(pairs=["quickstart"], distillers=["kd", "at"])
    with pytest.raises(SakdError, match="share output_dir"):
        plan_grid(spec, "g", root=tmp_path)  # the quickstart recipe's output_dir has no fields


@pytest.mark.fault("run-folder")
def test_a_folder_holding_another_configuration_is_refused(tmp_path):
    grid = write_grid(tmp_path / "g.yaml")
    spec, name = load_grid(str(grid))
    (planned,) = plan_grid(spec, name, root=tmp_path).runs
    planned.output_dir.mkdir(parents=True)
    (planned.output_dir / "config.yaml").write_text(dump_config(planned.config))
    # Settings that do not change the run (progress, device, ...) are not a conflict, nor are
    # fields added to the schema after the run was written (they take their defaults).
    assert plan_grid(spec, name, ["progress=true", "device=cpu"], root=tmp_path).runs
    saved = yaml.safe_load((planned.output_dir / "config.yaml").read_text())
    del saved["lr_scaling"], saved["spots"]["tau"]
    (planned.output_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    assert plan_grid(spec, name, root=tmp_path).runs
    with pytest.raises(SakdError, match="another configuration .lr differ"):
        plan_grid(spec, name, ["lr=0.1"], root=tmp_path)


@pytest.mark.fault("config")
def test_a_missing_teacher_without_a_recipe_is_refused(tmp_path):
    spec = GridSpec(
        pairs=[{"recipe": "quickstart", "teacher_checkpoint": "nowhere/teacher.pt"}],
        distillers=["kd"],
        overrides=["output_dir=r/{distiller}-{mode}/seed{seed}"],
    )
    with pytest.raises(SakdError, match="does not exist and cannot be trained"):
        plan_grid(spec, "g", root=tmp_path)


def test_out_root_holds_runs_and_teachers_but_not_packaged_or_absolute_files(tmp_path):
    spec = GridSpec(pairs=["cifar100/vgg13-vgg8"], distillers=["at"], modes=["fixed"])
    plan = plan_grid(spec, "g", root=tmp_path / "root")
    (run,) = plan.runs
    assert run.config.output_dir == str(tmp_path / "root/runs/cifar100/vgg13-vgg8/at-fixed/seed0")
    assert plan.teachers[0].run_dir == tmp_path / "root/runs/cifar100/train/vgg13/seed0"
    packaged = plan_grid(
        GridSpec(pairs=["quickstart"], distillers=["kd"], modes=["fixed"]), "g", root=tmp_path
    )
    assert packaged.runs[0].config.teacher.checkpoint == "sakd:assets/quickstart_teacher.pt"


def test_a_pair_entry_can_change_networks_and_carry_its_own_overrides(tmp_path):
    spec = GridSpec(
        pairs=[
            "quickstart",
            {
                "recipe": "quickstart",
                "student": "resnet14",
                "overrides": ["output_dir=other/{student}-{distiller}-{mode}-{seed}", "lr=0.02"],
            },
        ],
        distillers=["kd"],
        modes=["fixed"],
        overrides=["output_dir=runs/{student}-{distiller}-{mode}-{seed}", "lr=0.01"],
    )
    first, second = plan_grid(spec, "g", root=tmp_path).runs
    assert (first.config.model.name, first.config.lr) == ("resnet8", 0.01)
    assert (second.config.model.name, second.config.lr) == ("resnet14", 0.02)
    assert first.output_dir == tmp_path / "runs/resnet8-kd-fixed-0"
    assert second.output_dir == tmp_path / "other/resnet14-kd-fixed-0"


def test_student_alone_adds_one_run_per_student_and_seed(tmp_path):
    spec = GridSpec(
        pairs=["quickstart", {"recipe": "quickstart", "student": "wrn_16_1"}],
        distillers=["at"],
        modes=["fixed", "adaptive"],
        seeds=[0, 1],
        overrides=["output_dir=runs/{teacher}-{student}/{distiller}-{mode}/seed{seed}", "lr=0.02"],
        student_alone="runs/{student}-alone/seed{seed}",
    )
    plan = plan_grid(spec, "g", root=tmp_path)
    arms = [(r.arm, r.config.model.name, r.seed) for r in plan.runs]
    assert arms[:6] == [
        ("student alone", "resnet8", 0),
        ("at-fixed", "resnet8", 0),
        ("at-adaptive", "resnet8", 0),
        ("student alone", "wrn_16_1", 0),
        ("at-fixed", "wrn_16_1", 0),
        ("at-adaptive", "wrn_16_1", 0),
    ]
    assert len(plan.runs) == 12
    alone = plan.runs[3]
    assert (alone.teacher, alone.distiller, alone.mode) == (None, "alone", "alone")
    assert alone.config.teacher is None and alone.config.distiller is None
    assert (alone.config.lr, alone.config.seed, alone.config.epochs) == (0.02, 0, 6)
    assert alone.output_dir == tmp_path / "runs/wrn_16_1-alone/seed0"
    assert [t.name for t in plan.shard(0, 4).teachers] == ["resnet32"]
    assert [r.arm for r in plan.shard(3, 12).runs] == ["student alone"]
    assert plan.shard(3, 12).teachers == []


def test_pairs_sharing_a_student_share_its_alone_runs(tmp_path):
    spec = GridSpec(
        pairs=["quickstart", "quickstart/ls"],
        distillers=["kd"],
        modes=["fixed"],
        overrides=["output_dir=runs/{distiller}-{mode}-{student}/seed{seed}"],
        student_alone="runs/{student}-alone/seed{seed}",
    )
    plan = plan_grid(spec, "g", root=tmp_path)
    assert [r.arm for r in plan.runs] == ["student alone", "kd-fixed", "kd-fixed"]
    assert plan.runs[2].output_dir == tmp_path / "runs/kd+ls-fixed-resnet8/seed0"
