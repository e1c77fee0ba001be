"""Server addresses: what the user typed, made canonical; a server's identity; whether it is this computer."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

from .errors import ServerUrlError

__all__ = ["is_loopback", "normalize_server_url", "server_key"]


def normalize_server_url(text: str) -> str:
    """A canonical ``scheme://host[:port][/path]`` from what the user typed (``http://`` when no scheme).

    Raises :class:`ServerUrlError` for anything that cannot be a server address.
    """
    raw = (text or "").strip()
    if not raw:
        raise ServerUrlError("Enter the server address, for example http://127.0.0.1:8000.")
    if "://" not in raw:
        raw = "http://" + raw
    try:
        parts = urlsplit(raw)
        port = parts.port  # validates the port number
    except ValueError as exc:
        raise ServerUrlError(f"'{text.strip()}' is not a valid server address ({exc}).") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise ServerUrlError(f"'{text.strip()}' is not a server address: use http:// or https://.")
    if not parts.hostname:
        raise ServerUrlError(f"'{text.strip()}' has no host name; use for example http://127.0.0.1:8000.")
    if parts.query or parts.fragment:
        raise ServerUrlError(f"'{text.strip()}' should be only the server address, without '?' or '#' parts.")
    if parts.username or parts.password:
        raise ServerUrlError("Do not put a user name or password in the server address.")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), netloc, path, "", ""))


def server_key(url: str) -> str:
    """The identity of a server for consent: scheme, host and effective port (``https://host:443``)."""
    parts = urlsplit(normalize_server_url(url))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


def is_loopback(url: str) -> bool:
    """True when the server runs on this computer (images then never cross a network)."""
    host = urlsplit(normalize_server_url(url)).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
