"""Logging in to a server with token auth (``monai-anon serve --auth-realm``), against the real app and a local
OpenID issuer: user name + password → the server's token endpoint; the token in memory only; an expired or
refused token asks for a login again; a clear sentence for every refusal."""

from __future__ import annotations

import json

import pytest
from CaseAnonymizerLib import LoginRequiredError, ServerClient, ServerResponseError, Token, TokenStore, describe
from conftest import load_dicom

TIMEOUT = 180


@pytest.fixture
def tokens():
    """No login from an earlier test (tokens live as long as the process, like Slicer's session)."""
    TokenStore.forget_all()
    yield TokenStore()
    TokenStore.forget_all()


@pytest.fixture
def secured(logic, auth_server, tokens):
    logic.parameters().serverUrl = auth_server.url
    logic.grantConsent(auth_server.url, remember=False)
    return logic


def dicom_node(auth_server):
    return load_dicom(sorted((auth_server.studies / "images").glob("*.dcm"))[0])


def stored_settings(shim) -> str:
    return json.dumps(shim.QSettings.store, default=str)


def test_a_secured_server_asks_for_a_login(secured, auth_server):
    with pytest.raises(LoginRequiredError) as info:
        secured.checkConnection(timeout=TIMEOUT)
    assert describe(info.value)[0] == (f"The server at {auth_server.url} requires a login; log in with your user "
                                       "name and password.")
    assert ServerClient(auth_server.url).auth_enabled()


def test_login_then_anonymize_with_the_token_in_memory_only(secured, auth_server, shim, tokens):
    import slicer

    info = secured.login("alice", "secret", timeout=TIMEOUT)
    assert {"anonymize", "counterfactual", "explain"} <= set(info.models)
    assert secured.loggedInAs() == "alice"
    token = tokens.get(auth_server.url)
    assert token is not None and token.access_token.count(".") == 2 and not token.expired()
    original = dicom_node(auth_server)
    outcome = secured.anonymize(original, seed=5, timeout=TIMEOUT)
    anonymized = outcome.nodes[0]
    assert slicer.util.arrayFromVolume(anonymized).shape == slicer.util.arrayFromVolume(original).shape
    assert json.loads(secured.parameters().anonymizeDetails)["seed"] == 5
    settings = stored_settings(shim)
    assert "secret" not in settings and token.access_token not in settings  # never written to the settings
    assert token.access_token not in repr(token)
    secured.logout()
    assert secured.loggedInAs() is None
    with pytest.raises(LoginRequiredError):
        secured.checkConnection(timeout=TIMEOUT)


def test_a_wrong_password_is_a_clear_sentence(secured, auth_server, tokens):
    with pytest.raises(LoginRequiredError) as info:
        secured.login("alice", "not-the-password", timeout=TIMEOUT)
    assert describe(info.value)[0] == f"The server at {auth_server.url} did not accept the user name or password."
    assert info.value.status == 401 and tokens.get(auth_server.url) is None


def test_a_user_without_a_role_is_told_access_is_refused(secured, auth_server, tokens):
    with pytest.raises(ServerResponseError) as info:
        secured.login("bob", "secret", timeout=TIMEOUT)  # the login works; the server refuses bob
    assert info.value.status == 403 and not isinstance(info.value, LoginRequiredError)
    assert describe(info.value)[0].startswith("The server refused access (HTTP 403)")


def test_an_expired_login_is_asked_again(secured, auth_server, issuer, tokens):
    issuer.login_lifetime_s = 10.0  # inside the client's safety margin: expired as soon as it is issued
    try:
        secured.login("alice", "secret", timeout=TIMEOUT)
    finally:
        issuer.login_lifetime_s = 600.0
    assert tokens.get(auth_server.url).expired()
    with pytest.raises(LoginRequiredError) as info:
        secured.anonymize(dicom_node(auth_server), timeout=TIMEOUT)
    assert describe(info.value)[0] == f"The login of alice to {auth_server.url} has expired; log in again."
    assert tokens.get(auth_server.url) is None  # forgotten: the next request needs a new login
    secured.login("alice", "secret", timeout=TIMEOUT)
    assert secured.anonymize(dicom_node(auth_server), seed=1, timeout=TIMEOUT).nodes


def test_a_token_the_server_refuses_asks_for_a_new_login(secured, auth_server, issuer, tokens):
    # the server's view wins: a token it no longer accepts (here: signed by a key it does not trust)
    from cryptography.hazmat.primitives.asymmetric import rsa

    forged = issuer.token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    tokens.put(auth_server.url, Token(forged, "alice", None))
    with pytest.raises(LoginRequiredError) as info:
        secured.anonymize(dicom_node(auth_server), timeout=TIMEOUT)
    assert describe(info.value)[0] == (f"The server at {auth_server.url} no longer accepts the login of alice (it "
                                       "may have expired); log in again.")
    secured.login("alice", "secret", timeout=TIMEOUT)
    assert tokens.get(auth_server.url).access_token != forged
    assert secured.anonymize(dicom_node(auth_server), seed=2, timeout=TIMEOUT).nodes
