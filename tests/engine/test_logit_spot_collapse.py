"""With the logit spot alone, the adaptive policy of a KD run collapses to fixed spots.

The routing loss is w·CE(z_mix, y) + max(0, B/2 − Σ a_K): when the teacher is the more accurate
network, routing the logits through it lowers CE(z_mix), and the hinge already asks for half the
batch there, so the logit spot's rate climbs to 1.00 and the run distils every sample, like
``spots.mode=fixed`` (docs/spots.md, "A logit spot alone").
"""

from __future__ import annotations

from sakd.config import load_config
from sakd.engine.run import run
from sakd.engine.rundir import RunFolder
from sakd.experiments.inspect import inspect_run


def test_kd_alone_adaptive_from_50_50_ends_on_the_teacher_path(tmp_path):
    out = tmp_path / "kd-adaptive"
    cfg = load_config(
        "quickstart",
        [
            f"output_dir={out}",
            "distiller.name=kd",
            "spots.mode=adaptive",
            "spots.homogeneous=false",  # the 50/50 start: no +10 bias towards the teacher path
            "epochs=2",
            "batch_size=32",
            "data.train_limit=256",
            "data.test_limit=64",
            "progress=false",
        ],
    )
    summary = run(cfg)
    folder = RunFolder(out)
    rates = [r.spot_rates["logits"] for r in folder.read_records()]
    teacher_top1 = folder.read_info().teacher_top1
    assert teacher_top1 > summary.best_top1 + 30  # the teacher is far more accurate
    assert 0.5 < rates[0] < 1.0  # the policy starts near 50/50 and moves within the first epoch
    assert rates[-1] >= 0.99  # (nearly) every sample of the last epoch distilled: fixed spots
    # The trained policy's exact probability of the teacher path, every training image and class.
    found = inspect_run(out, checkpoint="last", split="train")
    assert found.rates.overall_prob[0] > 0.99
    assert min(row[0] for row in found.rates.prob) > 0.95
