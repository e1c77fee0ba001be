"""A local OpenID issuer (Keycloak-shaped) for tests of token auth: realm document, discovery, JWKS and a
password-grant token endpoint on a loopback port (used by the server and the Slicer tests)."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs

__all__ = ["OpenIDIssuer"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OpenIDIssuer:
    """Serves ``/realms/test`` (with ``public_key``), its discovery document, JWKS and a password-grant
    token endpoint on a loopback port, signing RS256 tokens with its own key."""

    USERS: ClassVar[dict] = {"alice": ("secret", ["monailabel-user", "monailabel-admin"]), "bob": ("secret", [])}

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "test-key-1"
        self.port = free_port()
        self.httpd: ThreadingHTTPServer | None = None
        self.login_lifetime_s = 600.0  # lifetime of the tokens its password login hands out

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/realms/test"

    def public_key_b64(self) -> str:
        from cryptography.hazmat.primitives import serialization

        der = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode()

    def jwk(self) -> dict[str, Any]:
        import jwt

        entry = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {**entry, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def token(self, key=None, kid: str | None = None, alg: str = "RS256", lifetime_s: float = 600.0,
              **claims: Any) -> str:
        import jwt

        now = int(time.time())
        payload = {"iss": self.realm, "sub": "alice", "preferred_username": "alice", "iat": now,
                   "exp": int(now + lifetime_s), "realm_access": {"roles": ["monailabel-user", "monailabel-admin"]},
                   **claims}
        return jwt.encode(payload, key if key is not None else self.key, algorithm=alg,
                          headers={"kid": kid or self.kid})

    def start(self) -> OpenIDIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _json(self, body: dict, status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                base = "/realms/test"
                if self.path == base:
                    self._json({"realm": "test", "public_key": issuer.public_key_b64()})
                elif self.path == base + "/.well-known/openid-configuration":
                    self._json({"issuer": issuer.realm, "jwks_uri": issuer.realm + "/protocol/openid-connect/certs",
                                "token_endpoint": issuer.realm + "/protocol/openid-connect/token"})
                elif self.path == base + "/protocol/openid-connect/certs":
                    self._json({"keys": [issuer.jwk()]})
                else:
                    self._json({"error": "not found"}, 404)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                user = issuer.USERS.get(form.get("username", ""))
                if not self.path.endswith("/token") or user is None or user[0] != form.get("password"):
                    self._json({"error": "invalid_grant"}, 401)
                    return
                token = issuer.token(sub=form["username"], preferred_username=form["username"],
                                     realm_access={"roles": user[1]}, lifetime_s=issuer.login_lifetime_s)
                self._json({"access_token": token, "token_type": "Bearer",
                            "expires_in": int(issuer.login_lifetime_s)})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True, name="openid-issuer").start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
