"""The version of sakd (a leaf module: the engine records it without importing the package)."""

__version__ = "0.1.0"
