"""Access tokens for servers started with token auth (``monai-anon serve --auth-realm``).

As MONAI Label's own Slicer plugin does, the user's name and password go to the server's token endpoint
(``POST /auth/token``) and the answer's access token is sent as ``Authorization: Bearer`` with every
request. Unlike that plugin, nothing is written to the settings: the token lives in this process's memory
only (per server), the password is never kept, and an expired token is forgotten so the user is asked again.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from .urls import server_key

__all__ = ["EXPIRY_MARGIN_S", "Token", "TokenStore", "token_from_answer"]

#: A token this close to its expiry counts as expired (a request may take that long to reach the server).
EXPIRY_MARGIN_S = 30.0


@dataclass(frozen=True)
class Token:
    """An access token, who it belongs to, and when it expires (``time.time()`` seconds, None if unknown)."""

    access_token: str
    username: str
    expires_at: float | None = None

    def expired(self, now: float | None = None) -> bool:
        if self.expires_at is None:
            return False
        return (time.time() if now is None else now) >= self.expires_at - EXPIRY_MARGIN_S

    def __repr__(self) -> str:  # never print the secret
        return f"Token(username={self.username!r}, expires_at={self.expires_at!r})"


def _jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying it (the server verifies; this only schedules)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


def token_from_answer(answer: dict[str, Any], username: str, now: float | None = None) -> Token | None:
    """The :class:`Token` in a token endpoint's JSON answer (None when the server has auth off)."""
    access = answer.get("access_token")
    if not access:
        return None
    expires_at = _jwt_expiry(str(access))
    if expires_at is None and isinstance(answer.get("expires_in"), (int, float)):
        expires_at = (time.time() if now is None else now) + float(answer["expires_in"])
    return Token(str(access), username, expires_at)


class TokenStore:
    """Tokens per server (scheme, host and port), shared by every instance and kept in memory only."""

    _tokens: ClassVar[dict[str, Token]] = {}

    def get(self, url: str) -> Token | None:
        return self._tokens.get(server_key(url))

    def put(self, url: str, token: Token) -> None:
        type(self)._tokens[server_key(url)] = token

    def forget(self, url: str) -> None:
        type(self)._tokens.pop(server_key(url), None)

    @classmethod
    def forget_all(cls) -> None:
        """Forget every token (tests; a new Slicer session starts without any)."""
        cls._tokens = {}
