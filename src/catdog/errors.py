"""catdog's user-facing error types, importable without torch (the CLI catches them cheaply)."""

from __future__ import annotations


class CatdogError(ValueError):
    """A failure the user can fix; ``str(err)`` is one clear sentence."""


class DatasetError(CatdogError):
    """A dataset folder that cannot be used."""


class ModelError(CatdogError):
    """A model that cannot be built or loaded."""
