"""Application settings kept between Slicer sessions: server URL history and remembered consent.

The backend is anything with ``value(key, default)`` and ``setValue(key, value)``: ``qt.QSettings()``
inside Slicer, a dict-backed object in tests. Values are stored as JSON text so that lists survive
QSettings' type guessing (a one-element string list otherwise comes back as a plain string).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Protocol

from .urls import normalize_server_url, server_key

__all__ = ["MAX_HISTORY", "ConsentStore", "SettingsBackend", "UrlHistory"]

MAX_HISTORY = 10
_PREFIX = "CaseAnonymizer/"


class SettingsBackend(Protocol):
    def value(self, key: str, default: Any = None) -> Any: ...

    def setValue(self, key: str, value: Any) -> None: ...


def _load_list(backend: SettingsBackend, key: str) -> list[str]:
    raw = backend.value(_PREFIX + key, "")
    if not raw:
        return []
    try:
        data = json.loads(str(raw))
    except ValueError:
        return []
    return [str(x) for x in data] if isinstance(data, list) else []


def _save_list(backend: SettingsBackend, key: str, items: list[str]) -> None:
    backend.setValue(_PREFIX + key, json.dumps(items))


class UrlHistory:
    """Most recently used server addresses, newest first, at most :data:`MAX_HISTORY`."""

    def __init__(self, backend: SettingsBackend) -> None:
        self.backend = backend

    def urls(self) -> list[str]:
        return _load_list(self.backend, "ServerUrlHistory")

    def add(self, url: str) -> list[str]:
        """Put ``url`` (normalized) first; returns the new history."""
        url = normalize_server_url(url)
        items = [url] + [u for u in self.urls() if u != url]
        items = items[:MAX_HISTORY]
        _save_list(self.backend, "ServerUrlHistory", items)
        return items

    def remove(self, url: str) -> list[str]:
        items = [u for u in self.urls() if u != url]
        _save_list(self.backend, "ServerUrlHistory", items)
        return items


class ConsentStore:
    """Consent to send images to a server: remembered in settings, or only for this Slicer session.

    Consent is per server (scheme, host and port), so agreeing to ``https://a`` says nothing about
    ``http://a`` or ``https://b``.
    """

    _session: ClassVar[set[str]] = set()  # shared by all instances: lives as long as the Slicer process

    def __init__(self, backend: SettingsBackend) -> None:
        self.backend = backend

    def remembered(self) -> list[str]:
        return _load_list(self.backend, "ConsentedServers")

    def has_consent(self, url: str) -> bool:
        key = server_key(url)
        return key in self._session or key in self.remembered()

    def grant(self, url: str, remember: bool) -> None:
        key = server_key(url)
        type(self)._session.add(key)
        if remember and key not in self.remembered():
            _save_list(self.backend, "ConsentedServers", [*self.remembered(), key])

    def revoke(self, url: str) -> None:
        key = server_key(url)
        type(self)._session.discard(key)
        _save_list(self.backend, "ConsentedServers", [k for k in self.remembered() if k != key])

    @classmethod
    def forget_session(cls) -> None:
        """Forget consents given for this session only (tests; a new Slicer session starts empty)."""
        cls._session = set()
