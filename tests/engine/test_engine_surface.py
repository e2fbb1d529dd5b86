"""The engine's public surface (``sakd.engine.__all__``) resolves, and the engine imports no ``sakd``."""

import ast
from pathlib import Path

import sakd.engine as engine


def test_every_public_name_resolves_to_its_module():
    for name in engine.__all__:
        value = getattr(engine, name)
        assert value.__name__ == name
        assert value.__module__.startswith("sakd.engine.")


def test_the_engine_does_not_import_the_top_level_package():
    folder = Path(engine.__file__).parent
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert "sakd" not in [alias.name for alias in node.names], path.name
            if isinstance(node, ast.ImportFrom):
                assert node.module != "sakd", path.name
