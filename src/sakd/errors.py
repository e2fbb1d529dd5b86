"""User-facing errors: one line that says what is wrong and how to fix it."""

from __future__ import annotations

from collections.abc import Iterator


class SakdError(Exception):
    """An error caused by the user's input (config, files, names); printed as one line, exit 2."""


class SakdWarning(UserWarning):
    """Something the user should know, though sakd goes on; the CLI prints ``sakd: warning: ...``."""


# The most characters of a user's value an error message quotes (a crafted value can be huge).
QUOTE_LIMIT = 200


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for an error message, cut at ``limit`` characters (and saying so).

    Nested lists and mappings are rendered lazily, so a value built from repeated YAML aliases
    is never expanded beyond what is shown.
    """
    text = ""
    for token in _repr_tokens(value):
        text += token
        if len(text) > limit:
            return text[:limit] + "... (truncated)"
    return text


def _repr_tokens(value: object) -> Iterator[str]:
    """``repr(value)`` piece by piece (lists, tuples and dicts recursed into lazily)."""
    if isinstance(value, dict):
        yield "{"
        for i, (key, item) in enumerate(value.items()):
            yield (", " if i else "") + repr(key) + ": "
            yield from _repr_tokens(item)
        yield "}"
    elif isinstance(value, (list, tuple)):
        yield "[" if isinstance(value, list) else "("
        for i, item in enumerate(value):
            if i:
                yield ", "
            yield from _repr_tokens(item)
        yield "]" if isinstance(value, list) else ("," if len(value) == 1 else "") + ")"
    elif isinstance(value, str) and len(value) > QUOTE_LIMIT:
        yield repr(value[: QUOTE_LIMIT + 1])[:-1]
    else:
        yield repr(value)


# The most characters of an error line the CLI prints (the quoted values are bounded already;
# this bounds the names and paths other messages quote too).
MESSAGE_LIMIT = 1000


def bounded(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """``message`` cut at ``limit`` characters, saying so."""
    return message if len(message) <= limit else message[:limit] + "... (truncated)"
