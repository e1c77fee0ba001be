"""Bearer-token verification for MONAI Label's built-in auth (``MONAI_LABEL_AUTH_*`` settings).

MONAI Label 0.8.5 calls ``jwt.decode(token, key)`` without ``algorithms``; PyJWT 2.x (which it requires)
then rejects *every* token, so its auth can never let anyone in. :func:`current_user` replaces its
``get_current_user`` dependency (``app.dependency_overrides``) and keeps everything else of MONAI Label's
design — the realm URI, client id, role claims and role names of its settings, and its RBAC checks:

* keys: the realm document's ``public_key`` (Keycloak), else the OpenID discovery document's
  ``jwks_uri`` (any OpenID provider); cached for five minutes, refreshed once on an unknown key id;
* signature checked with the token's own algorithm restricted to asymmetric ones (no ``none``, no
  HMAC with a public key); ``exp`` required; ``iss`` must be the realm's issuer;
* missing, malformed, expired or badly signed tokens: 401 with ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from fastapi import Depends, HTTPException, status
from monailabel.config import settings
from monailabel.endpoints.user.auth import User, oauth2_scheme

__all__ = ["ASYMMETRIC_ALGORITHMS", "TokenVerifier", "current_user"]

logger = logging.getLogger(__name__)
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
KEY_TTL_S = 300.0


class TokenVerifier:
    """Verifies access tokens issued by the OpenID realm at ``realm_uri``."""

    def __init__(self, realm_uri: str, timeout_s: float = 10.0) -> None:
        self.realm_uri = realm_uri.rstrip("/")
        self.timeout_s = timeout_s
        self._keys: dict[str | None, Any] = {}
        self._issuer: str = self.realm_uri
        self._fetched = 0.0
        self._lock = threading.Lock()

    def _get(self, url: str) -> dict[str, Any]:
        r = requests.get(url, timeout=self.timeout_s)
        r.raise_for_status()
        return r.json()

    def _refresh(self) -> None:
        keys: dict[str | None, Any] = {}
        issuer = self.realm_uri
        try:
            discovery = self._get(f"{self.realm_uri}/.well-known/openid-configuration")
        except (requests.RequestException, ValueError):
            discovery = {}
        issuer = discovery.get("issuer") or issuer
        try:
            realm = self._get(self.realm_uri)
        except (requests.RequestException, ValueError):
            realm = {}
        if realm.get("public_key"):
            pem = f"-----BEGIN PUBLIC KEY-----\n{realm['public_key']}\n-----END PUBLIC KEY-----"
            keys[None] = _load_pem(pem)
        if discovery.get("jwks_uri"):
            for entry in self._get(discovery["jwks_uri"]).get("keys", []):
                try:
                    keys[entry.get("kid")] = jwt.PyJWK.from_dict(entry).key
                except jwt.PyJWTError:
                    continue
        if not keys:
            raise jwt.InvalidTokenError(f"no signing keys found at {self.realm_uri}")
        self._keys, self._issuer, self._fetched = keys, issuer, time.monotonic()

    def _key(self, kid: str | None, force: bool = False) -> Any:
        with self._lock:
            if force or not self._keys or time.monotonic() - self._fetched > KEY_TTL_S:
                self._refresh()
            key = self._keys.get(kid)
            if key is None and None in self._keys:
                key = self._keys[None]
            return key

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; :class:`jwt.InvalidTokenError` when it must not be trusted."""
        header = jwt.get_unverified_header(token)
        alg = header.get("alg")
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise jwt.InvalidTokenError(f"token algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        key = self._key(kid)
        if key is None:
            key = self._key(kid, force=True)
        if key is None:
            raise jwt.InvalidTokenError("token signed with an unknown key")
        return jwt.decode(token, key, algorithms=[alg], issuer=self._issuer,
                          options={"verify_aud": False, "require": ["exp", "iss"]})


def _load_pem(pem: str) -> Any:
    return load_pem_public_key(pem.encode())


def user_from_claims(claims: dict[str, Any]) -> User:
    """A MONAI Label :class:`User` from verified claims, with MONAI Label's claim settings."""
    roles: Any = claims
    for part in settings.MONAI_LABEL_AUTH_TOKEN_ROLES.split("#"):
        roles = roles.get(part) if isinstance(roles, dict) else None
    return User(username=str(claims.get(settings.MONAI_LABEL_AUTH_TOKEN_USERNAME) or claims.get("sub") or "unknown"),
                email=claims.get(settings.MONAI_LABEL_AUTH_TOKEN_EMAIL),
                name=claims.get(settings.MONAI_LABEL_AUTH_TOKEN_NAME),
                roles=[str(r) for r in roles] if isinstance(roles, list) else [])


_verifier: TokenVerifier | None = None


def verifier() -> TokenVerifier:
    global _verifier
    if _verifier is None or _verifier.realm_uri != settings.MONAI_LABEL_AUTH_REALM_URI.rstrip("/"):
        _verifier = TokenVerifier(settings.MONAI_LABEL_AUTH_REALM_URI, settings.MONAI_LABEL_AUTH_TIMEOUT)
    return _verifier


def current_user(token: str = Depends(oauth2_scheme)) -> User:
    """FastAPI dependency (sync, so key fetches run off the event loop): the verified user, or 401."""
    try:
        return user_from_claims(verifier().verify(token))
    except (jwt.PyJWTError, requests.RequestException, ValueError) as exc:
        logger.info("rejected token: %s", exc)
        raise HTTPException(status_code=status.HTTP_401_UNAUTHORIZED, detail="Missing, expired or invalid token.",
                            headers={"WWW-Authenticate": "Bearer"}) from None
