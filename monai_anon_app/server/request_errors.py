"""Request errors with an HTTP status and a one-sentence message, and how library errors map onto them."""

from __future__ import annotations

from monai_anon_app.errors import InputError, ModelError

__all__ = ["RequestError", "as_request_error"]


class RequestError(Exception):
    """A request the server refuses: ``status`` (4xx, or 5xx for server-side trouble) and one sentence;
    ``retry_after`` (seconds) when the same request may succeed if sent again (HTTP ``Retry-After``)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(status, message)
        self.status = int(status)
        self.message = sentence(message)
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message


def sentence(text: str) -> str:
    """``text`` on one line, ending with a full stop (a leading plain word capitalised)."""
    text = " ".join(str(text).split()) or "Request failed"
    first = text.split()[0]
    if first.isalpha() and first.islower():  # a plain word, not a file name or an id
        text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def as_request_error(exc: BaseException) -> RequestError | None:
    """The :class:`RequestError` for a known library error (bad input, model trouble), else ``None``."""

    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, InputError):
        return RequestError(422, str(exc))
    if isinstance(exc, ModelError):
        return RequestError(503, str(exc))
    if isinstance(exc, MemoryError):
        return RequestError(413, "the image needs more memory than the server has; send a smaller image")
    return None
