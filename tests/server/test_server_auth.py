"""Hosting for an institution: token auth against a local OpenID issuer over TLS, and the refusal to
listen publicly without authentication."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import subprocess
import sys

import pytest
import requests
from server_testlib import REPO, OpenIDIssuer, self_signed_certificate, start_server


@pytest.fixture(scope="module")
def issuer():
    iss = OpenIDIssuer().start()
    yield iss
    iss.stop()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory, tiny_model, study_template, issuer):
    root = tmp_path_factory.mktemp("auth-server")
    shutil.copytree(study_template, root / "studies")
    cert, key = self_signed_certificate(root / "tls")
    srv = start_server(root / "work", root / "studies", tiny_model, "--auth-realm", issuer.realm,
                       "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--workers", "1",
                       scheme="https", verify=str(cert), ready_status=(401,))
    yield srv
    srv.stop()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_with_public_key(issuer: OpenIDIssuer) -> str:
    """The classic algorithm-confusion forgery: HMAC-signed with the issuer's *public* key as secret."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": issuer.kid}).encode())
    claims = json.loads(base64.urlsafe_b64decode(issuer.token().split(".")[1] + "=="))
    body = _b64(json.dumps(claims).encode())
    secret = issuer.public_key_b64().encode()
    sig = _b64(hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest())
    return f"{header}.{body}.{sig}"


def _unsigned(issuer: OpenIDIssuer) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = issuer.token().split(".")[1]
    return f"{header}.{body}."


def test_unauthenticated_and_bad_tokens_get_401(auth_server, issuer):
    from cryptography.hazmat.primitives.asymmetric import rsa

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = {
        "missing": None,
        "garbage": "not-a-token",
        "signed by another key": issuer.token(key=other_key),
        "expired": issuer.token(lifetime_s=-60),
        "wrong issuer": issuer.token(iss="http://127.0.0.1:1/realms/evil"),
        "alg none": _unsigned(issuer),
        "HS256 with the public key": _hs256_with_public_key(issuer),
        "tampered claims": ".".join([issuer.token().split(".")[0],
                                     _b64(json.dumps({"iss": issuer.realm, "exp": 9999999999,
                                                      "realm_access": {"roles": ["monailabel-admin"]}}).encode()),
                                     issuer.token().split(".")[2]]),
    }
    for name, token in bad.items():
        headers = _bearer(token) if token else {}
        for method, path in (("GET", "/info/"), ("POST", "/infer/anonymize?image=x"), ("POST", "/train/disentangler"),
                             ("GET", "/datastore/?output=all")):
            r = auth_server.request(method, path, headers=headers)
            assert r.status_code == 401, (name, path, r.status_code, r.text)
            assert r.headers.get("www-authenticate", "").lower().startswith("bearer")


# Every route of MONAI Label's datastore router (0.8.5), the deprecated ones included: originals (pixels and
# headers), their info, labels and the whole dataset must never be served or changed without a valid token.
DATASTORE_ROUTES = (
    ("GET", "/datastore/?output=all"), ("PUT", "/datastore/"), ("DELETE", "/datastore/?id=x"),
    ("PUT", "/datastore/image"), ("DELETE", "/datastore/image?id=x"), ("HEAD", "/datastore/image?image=x"),
    ("GET", "/datastore/image?image=x"), ("GET", "/datastore/image/info?image=x"),
    ("PUT", "/datastore/image/info?image=x"), ("PUT", "/datastore/label?image=x&tag=final"),
    ("DELETE", "/datastore/label?id=x&tag=final"), ("HEAD", "/datastore/label?image=x&tag=final"),
    ("GET", "/datastore/label?label=x&tag=final"), ("GET", "/datastore/label/info?label=x&tag=final"),
    ("PUT", "/datastore/label/info?label=x&tag=final"), ("PUT", "/datastore/updatelabelinfo?label=x&tag=final"),
    ("GET", "/datastore/dataset"),
)


def test_every_datastore_route_needs_a_valid_token(auth_server, issuer):
    token = issuer.token()
    image = sorted(auth_server.get("/datastore/?output=all", headers=_bearer(token)).json()["objects"])[0]
    schema = auth_server.get("/openapi.json", headers=_bearer(token))
    assert schema.status_code == 200, schema.text
    listed = {(method.upper(), path) for path, ops in schema.json()["paths"].items() if path.startswith("/datastore")
              for method in ops}
    covered = {(method, path.split("?")[0]) for method, path in DATASTORE_ROUTES}
    assert listed <= covered, f"datastore routes without an auth check in this test: {sorted(listed - covered)}"
    for method, path in DATASTORE_ROUTES:
        path = path.replace("=x", f"={image}")
        for headers in ({}, _bearer("not-a-token"), _bearer(issuer.token(lifetime_s=-60))):
            r = auth_server.request(method, path, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.status_code, r.text[:200])
            assert r.headers.get("www-authenticate", "").lower().startswith("bearer")
    # with a valid token the original comes back: the token is all that stood in the way
    original = auth_server.get(f"/datastore/image?image={image}", headers=_bearer(token))
    assert original.status_code == 200 and original.content[128:132] == b"DICM"
    assert auth_server.get(f"/datastore/image/info?image={image}", headers=_bearer(token)).status_code == 200


def test_valid_token_works_and_roles_are_checked(auth_server, issuer):
    token = issuer.token()
    info = auth_server.get("/info/", headers=_bearer(token))
    assert info.status_code == 200 and "anonymize" in info.json()["models"]
    image = sorted(auth_server.get("/datastore/?output=all", headers=_bearer(token)).json()["objects"])[0]
    r = auth_server.post(f"/infer/anonymize?image={image}&output=json", headers=_bearer(token),
                         data={"params": json.dumps({"seed": 3})})
    assert r.status_code == 200 and r.json()["seed"] == 3
    # a valid token without MONAI Label's roles: authenticated, but not allowed
    no_roles = issuer.token(sub="bob", preferred_username="bob", realm_access={"roles": []})
    assert auth_server.get("/info/", headers=_bearer(no_roles)).status_code == 403
    user_only = issuer.token(realm_access={"roles": ["monailabel-user"]})
    assert auth_server.post("/train/disentangler", headers=_bearer(user_only), json={}).status_code == 403


def test_official_client_logs_in_through_the_server(auth_server):
    from monailabel.client import MONAILabelClient

    client = MONAILabelClient(auth_server.url)
    assert client.auth_enabled()
    token = client.auth_token("alice", "secret")
    client.update_auth(token)
    assert client.auth_valid_token()
    assert "anonymize" in client.info()["models"]


def test_plain_http_is_not_served_on_the_tls_port(auth_server):
    with pytest.raises(requests.RequestException):
        requests.get(auth_server.url.replace("https://", "http://") + "/info/", timeout=10)


def _serve(*args: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monai_anon_app.cli", "serve", "--workdir", str(tmp_path / "w"),
                           "--studies", str(tmp_path), *args], capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_public_bind_without_auth_is_refused(tmp_path, host):
    r = _serve("--host", host, "--dry-run", tmp_path=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"refusing to listen on {host} without authentication" in lines[0]
    assert "--auth-realm" in lines[0] and "--behind-auth-proxy" in lines[0]


@pytest.mark.parametrize("extra", [["--behind-auth-proxy"], ["--auth-realm", "https://login.example.org/realms/x"]])
def test_public_bind_with_auth_or_proxy_is_accepted(tmp_path, extra):
    r = _serve("--host", "0.0.0.0", *extra, "--dry-run", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "--host 0.0.0.0" in r.stdout and "monai_anon_app.server.rest:app" in r.stdout
    assert ("MONAI_LABEL_AUTH_ENABLE=true" in r.stdout) == ("--auth-realm" in extra)


def test_loopback_needs_no_auth_and_tls_needs_both_files(tmp_path):
    assert _serve("--host", "127.0.0.1", "--dry-run", tmp_path=tmp_path).returncode == 0
    assert _serve("--host", "localhost", "--dry-run", tmp_path=tmp_path).returncode == 0
    r = _serve("--ssl-certfile", str(tmp_path / "missing.pem"), "--dry-run", tmp_path=tmp_path)
    assert r.returncode == 2 and "--ssl-keyfile" in r.stderr
