"""Errors the user sees: each one is a single sentence, with details available on demand.

Everything the module shows to a user goes through :func:`describe`, so an unexpected exception is
still reported as one sentence (with the traceback in the details) and never as a bare traceback.
"""

from __future__ import annotations

import traceback

__all__ = [
    "CancelledError",
    "CaseAnonymizerError",
    "CertificateError",
    "ConsentRequiredError",
    "ImageRefusedError",
    "InputError",
    "LoginRequiredError",
    "ModelNotFoundError",
    "NotAServerError",
    "ServerFailedError",
    "ServerResponseError",
    "ServerTimeoutError",
    "ServerUnreachableError",
    "ServerUrlError",
    "describe",
]


class CaseAnonymizerError(Exception):
    """An error with a one-sentence message for the user (``str(exc)``) and optional ``details``."""

    def __init__(self, sentence: str, details: str = "") -> None:
        super().__init__(sentence)
        self.sentence = sentence
        self.details = details


class ServerUrlError(CaseAnonymizerError):
    """The server address cannot be used (no host, unknown scheme)."""


class ServerUnreachableError(CaseAnonymizerError):
    """Nothing answers at the server address (refused connection, unknown host, network down)."""


class ServerTimeoutError(CaseAnonymizerError):
    """The server did not answer within the configured timeout."""


class CertificateError(CaseAnonymizerError):
    """HTTPS certificate verification failed."""


class NotAServerError(CaseAnonymizerError):
    """Something answered, but it is not a MONAI Label server of this project."""


class ServerResponseError(CaseAnonymizerError):
    """The server answered with an HTTP error status; ``detail`` is its own one-sentence reason."""

    def __init__(self, sentence: str, status: int, detail: str = "", details: str = "") -> None:
        super().__init__(sentence, details)
        self.status = status
        self.detail = detail


class ModelNotFoundError(ServerResponseError):
    """The server has no model (infer task) of the requested name (HTTP 404 on ``/infer/<model>``)."""


class ImageRefusedError(ServerResponseError):
    """The server refused the image or the request parameters (HTTP 400, 413, 415, 422)."""


class LoginRequiredError(ServerResponseError):
    """The server wants a (new) login: no token, an expired one, or a wrong user name or password (HTTP 401)."""


class ServerFailedError(ServerResponseError):
    """The server failed while processing the request (HTTP 5xx)."""


class ConsentRequiredError(CaseAnonymizerError):
    """An image would leave Slicer for a server the user has not agreed to send images to."""


class InputError(CaseAnonymizerError):
    """The input (volume, DICOM source, parameters) does not allow the requested operation."""


class CancelledError(CaseAnonymizerError):
    """The user cancelled the operation."""

    def __init__(self, sentence: str = "Cancelled.", details: str = "") -> None:
        super().__init__(sentence, details)


def describe(exc: BaseException) -> tuple[str, str]:
    """``(one sentence, details)`` for any exception, suitable for a status line and a details box."""
    if isinstance(exc, CaseAnonymizerError):
        return exc.sentence, exc.details
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"Unexpected error ({type(exc).__name__}): {message}", details
