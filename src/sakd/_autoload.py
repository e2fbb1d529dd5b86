"""Imports for the registries: every submodule of a package (so decorator registries fill
themselves), and a user's module named in a ``package.module:attr`` name.

Importing a user's module runs its code. A name the user gave (command line, recipe, Python call)
is imported freely; a name read from a stored configuration (a checkpoint, a run folder's
``config.yaml``) only when the user confirms it: the readers of stored configurations wrap their
work in :func:`stored_names`, and :func:`import_user_module` refuses inside it.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import ModuleType

from sakd.errors import SakdError

TRUST_HINT = "if you trust that module, run again with --trust-code (Python: trust_code=True)"


@dataclass(frozen=True)
class _Stored:
    """Names are being read from ``source``; ``confirmed`` ones (or all, ``trusted``) may run."""

    source: str
    confirmed: frozenset[str]
    how: str
    trusted: bool


_STORED: ContextVar[_Stored | None] = ContextVar("sakd_stored_names", default=None)


@contextmanager
def stored_names(
    source: str, confirmed: Iterable[str] = (), how: str = TRUST_HINT, trusted: bool = False
) -> Iterator[None]:
    """Within the block, names come from a stored configuration (``source``, e.g. a file).

    A ``package.module:attr`` name is then imported only when it is in ``confirmed`` (names the
    user gave again) or the user ``trusted`` the source (``--trust-code``); any other raises
    :class:`SakdError` saying so and ``how`` to confirm it (``{name}`` in it is replaced by the
    name). Nested blocks keep the outermost source and hint (the entry point knows how the user
    confirms) and add their confirmed names; inside a trusted block they change nothing.
    """
    outer = _STORED.get()
    if outer is None:
        guard = _Stored(source, frozenset(confirmed), how, trusted)
    else:
        guard = _Stored(outer.source, outer.confirmed | set(confirmed), outer.how, outer.trusted)
    token = _STORED.set(guard)
    try:
        yield
    finally:
        _STORED.reset(token)


def import_submodules(package_name: str, package_path: list[str]) -> None:
    """Import each module found in ``package_path`` as ``package_name.<module>``."""
    for info in pkgutil.iter_modules(package_path):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")


def import_user_module(module_name: str, name: str | None = None) -> ModuleType:
    """Import ``module_name`` from the installed packages or, failing that, the current directory.

    ``name``: the ``package.module:attr`` being resolved (checked against :func:`stored_names`).
    Raises ``ModuleNotFoundError`` when the module does not exist; any failure of the module's own
    code (a SyntaxError, an import it lacks, any exception) is one :class:`SakdError` naming it.
    """
    name = name or module_name
    stored = _STORED.get()
    if stored is not None and not stored.trusted and name not in stored.confirmed:
        raise SakdError(
            f"{stored.source} names {name!r}: importing it would run the code of module "
            f"{module_name!r}, which sakd does only when you confirm it; "
            + stored.how.replace("{name}", name)
        )
    try:
        return _import(module_name)
    except ModuleNotFoundError:
        cwd = os.getcwd()
        if cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        return _import(module_name)


def _import(module_name: str) -> ModuleType:
    """``importlib.import_module``; only a missing ``module_name`` stays a ModuleNotFoundError."""
    try:
        return importlib.import_module(module_name)
    except SakdError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise
        raise user_code_error(f"importing module {module_name!r}", exc) from exc
    except BaseException as exc:  # the user's module: one line (interrupts pass, see below)
        if passes_through(exc):
            raise
        raise user_code_error(f"importing module {module_name!r}", exc) from exc


def passes_through(exc: BaseException) -> bool:
    """True for what user code must not turn into an error line: interrupts, sakd's own exceptions.

    Everything else the user's code raises (any ``Exception``, ``SystemExit``, a ``BaseException``
    subclass of its own) is theirs: :func:`user_code_error` makes it one line.
    """
    own = type(exc).__module__.partition(".")[0] == "sakd"
    return own or isinstance(exc, (KeyboardInterrupt, GeneratorExit))


def user_code_error(what: str, exc: BaseException) -> SakdError:
    """One line for an exception raised by the user's own code: what failed, type and message."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    if isinstance(exc, SyntaxError) and exc.filename:
        text = f"{exc.msg} ({exc.filename}, line {exc.lineno})"
    raised = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return SakdError(f"{what} failed ({raised}): fix that code")
