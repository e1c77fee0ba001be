"""Fresh seeds and pseudonyms for synthetic identities: random, never derived from the original patient."""

from __future__ import annotations

import secrets

__all__ = ["new_pseudonym", "new_seed"]


def new_seed() -> int:
    """A fresh identity seed (31 bits, so every server and JSON reader takes it)."""
    return secrets.randbelow(2**31 - 1) + 1


def new_pseudonym() -> str:
    """A short random pseudonym for a new anonymized patient (never derived from the original)."""
    return secrets.token_hex(4).upper()
