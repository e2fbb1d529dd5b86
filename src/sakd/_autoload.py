"""Imports for the registries: every submodule of a package (so decorator registries fill
themselves), and a user's module named in a ``package.module:attr`` name."""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from types import ModuleType


def import_submodules(package_name: str, package_path: list[str]) -> None:
    """Import each module found in ``package_path`` as ``package_name.<module>``."""
    for info in pkgutil.iter_modules(package_path):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")


def import_user_module(module_name: str) -> ModuleType:
    """Import ``module_name`` from the installed packages or, failing that, the current directory.

    Raises the ``ImportError`` of the last attempt.
    """
    try:
        return importlib.import_module(module_name)
    except ImportError:
        cwd = os.getcwd()
        if cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        return importlib.import_module(module_name)
