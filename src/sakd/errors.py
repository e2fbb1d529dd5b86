"""User-facing errors: one line that says what is wrong and how to fix it."""


class SakdError(Exception):
    """An error caused by the user's input (config, files, names); printed as one line, exit 2."""
