"""The data order of every phase is pinned: a change to the pre-training (or main) order fails here.

A run resumed in the middle of a phase, or rerun with a newer sakd, must see the batches the
original run saw; each phase draws its order from its own data key (``Phase.data_key``).
"""

from __future__ import annotations

from sakd.config import load_config
from sakd.engine import trainer as trainer_module
from sakd.engine.run import run
from sakd.engine.task_contract import PRETRAIN_DATA_KEY_STRIDE, pretrain_data_key

from ..conftest import tiny_overrides

# The first 8 dataset indices and labels of the first batch of each phase's first epoch
# (quickstart data, seed 0, 96 training samples, batch 32).
PINNED = {
    "pretrain-ft": (
        PRETRAIN_DATA_KEY_STRIDE,
        [59, 89, 26, 43, 94, 92, 93, 45],
        [9, 9, 6, 3, 4, 2, 3, 5],
    ),
    "distill": (0, [3, 34, 78, 55, 26, 69, 5, 23], [3, 4, 8, 5, 6, 9, 5, 3]),
}


def test_first_batches_of_each_phase_are_pinned(tmp_path, monkeypatch):
    seen: dict[int, tuple[list[int], list[int]]] = {}
    original = trainer_module.iterate_source

    def spy(*args, **kwargs):
        batches = original(*args, **kwargs)
        images, labels, index = next(batches)
        seen[kwargs["epoch"]] = (index[:8].tolist(), labels[:8].tolist())
        yield images, labels, index
        yield from batches

    monkeypatch.setattr(trainer_module, "iterate_source", spy)
    extra = ["epochs=1", "distiller.name=ft", "distiller.params.pretrain_epochs=1"]
    run(load_config("quickstart", tiny_overrides(tmp_path / "r", *extra)))
    assert sorted(seen) == sorted(key for key, _, _ in PINNED.values())
    for phase, (key, indices, labels) in PINNED.items():
        assert seen[key] == (indices, labels), phase


def test_pretraining_phases_have_keys_of_their_own():
    keys = [pretrain_data_key(position) for position in range(3)]
    assert keys == [10_000, 20_000, 30_000] and 0 not in keys
