"""``POST /auth/token``: MONAI Label's password login (user name + password → the OpenID provider's token
endpoint), answering a refused login with 401 and one sentence.

MONAI Label 0.8.5's own endpoint raises on the provider's refusal, so a wrong password comes back as a bare
HTTP 500 that a client cannot tell from a server failure; it also blocks the event loop on both requests.
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from fastapi import Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordRequestForm
from monailabel.config import settings
from monailabel.endpoints.user.auth import token_uri

from monai_anon_app.server.request_errors import RequestError

__all__ = ["access_token"]

logger = logging.getLogger(__name__)
REFUSED = (400, 401, 403)  # what OpenID providers answer to a wrong password (Keycloak: 401 invalid_grant)


def _request_token(username: str, password: str) -> dict[str, Any]:
    """The provider's token answer (blocking); :class:`RequestError` 401 when it refuses the login."""
    try:
        url = token_uri()
        if not url:
            raise ValueError("the OpenID configuration names no token endpoint")
        response = requests.post(url, data={"client_id": settings.MONAI_LABEL_AUTH_CLIENT_ID, "username": username,
                                            "password": password, "grant_type": "password"},
                                 timeout=settings.MONAI_LABEL_AUTH_TIMEOUT)
    except (requests.RequestException, ValueError) as exc:
        logger.warning("login service unreachable: %s", exc)
        raise RequestError(502, "the server cannot reach its login service; try again later") from None
    if response.status_code in REFUSED:
        raise RequestError(401, "the user name or password is not right")
    if not response.ok:
        raise RequestError(502, f"the login service answered HTTP {response.status_code}; try again later")
    try:
        return response.json()
    except ValueError:
        raise RequestError(502, "the login service's answer could not be read") from None


async def access_token(form_data: OAuth2PasswordRequestForm = Depends()) -> dict[str, Any]:
    """Exchange a user name and password for an access token (``{"access_token", "token_type", ...}``)."""
    if not settings.MONAI_LABEL_AUTH_ENABLE:
        return {"access_token": None, "token_type": None}
    return await run_in_threadpool(_request_token, form_data.username, form_data.password)
