"""Shared fixtures: tiny runs on the embedded data, on the CPU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch


def _fault_classes():
    """``tests/fault_classes.py``, loaded once by its path (the tests are not an installed package)."""
    name = "sakd_tests_fault_classes"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("fault_classes.py")
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def pytest_configure(config):
    """Every ``fault`` marker must name a class of ``tests/fault_classes.py``."""
    if not config.pluginmanager.has_plugin("sakd-fault-classes"):
        config.pluginmanager.register(_fault_classes(), "sakd-fault-classes")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip on a machine without CUDA (``pytest -m cuda`` runs them on one)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (benchmarks/gpu_check.sh runs pytest -m cuda)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _few_threads():
    """Tests run two at a time on two cores: one intra-op thread each."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_overrides(out, *extra: str) -> list[str]:
    """Overrides for a run of a few steps on embedded data."""
    return [
        f"output_dir={out}",
        "epochs=2",
        "batch_size=32",
        "data.train_limit=96",
        "data.test_limit=64",
        "progress=false",
        *extra,
    ]


def stop_after_saves(monkeypatch, saves: int = 1) -> None:
    """Interrupt the next run (Ctrl-C, ``KeyboardInterrupt``) right after its ``saves``-th save.

    What a user's Ctrl-C between two epochs leaves: ``last.pt`` of that epoch, no summary.
    """
    from sakd.engine import trainer as trainer_module

    calls = {"n": 0}
    original = trainer_module.Trainer._save

    def save_then_stop(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == saves:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.Trainer, "_save", save_then_stop)
