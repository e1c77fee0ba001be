"""Errors meant for the user: their message is one sentence saying what went wrong and what to do."""

from __future__ import annotations

__all__ = ["InputError", "ModelError"]


class InputError(ValueError):
    """An input the tools cannot take (missing, unreadable, wrong dimensionality, non-finite, …)."""


class ModelError(RuntimeError):
    """The model folder is missing, incomplete, or cannot produce a safe result."""
