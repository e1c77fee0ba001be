"""Slicer's translation functions, with pass-through stand-ins where Slicer has none (before 5.4, plain Python).

Slicer's ``tr`` takes the translation context from the calling file (its package and file name).
"""

from __future__ import annotations

__all__ = ["tr", "translate"]

try:
    from slicer.i18n import tr, translate
except ImportError:  # pragma: no cover - Slicer before 5.4

    def tr(text: str) -> str:
        return text

    def translate(context: str, text: str) -> str:
        return text
