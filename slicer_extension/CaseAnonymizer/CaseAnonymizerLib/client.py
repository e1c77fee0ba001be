"""HTTP client for the monai-anon MONAI Label server (REST contract: ``docs/rest.md`` of the project).

No Qt and no MRML here: every method may run on a worker thread. Errors are raised as
:mod:`CaseAnonymizerLib.errors` exceptions whose message is one sentence for the user.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import requests

from .errors import (
    CancelledError,
    CertificateError,
    ImageRefusedError,
    LoginRequiredError,
    ModelNotFoundError,
    NotAServerError,
    ServerFailedError,
    ServerResponseError,
    ServerTimeoutError,
    ServerUnreachableError,
)
from .login import Token, token_from_answer
from .urls import normalize_server_url

__all__ = [
    "CONNECT_TIMEOUT",
    "InferResponse",
    "ModelInfo",
    "ProgressCallback",
    "ServerClient",
    "ServerInfo",
    "Upload",
    "parse_multipart",
]

#: Seconds to wait for a TCP/TLS connection before reporting the server as unreachable.
CONNECT_TIMEOUT = 5.0
#: Models (infer tasks) this module needs; ``export`` is optional (only DICOM export needs it).
REQUIRED_MODELS = ("anonymize", "counterfactual", "explain")
_CHUNK = 64 * 1024

#: ``progress(stage_text, fraction or None)``; called from the worker thread.
ProgressCallback = Callable[[str, "float | None"], None]


@dataclass
class ModelInfo:
    """One model (infer task) listed by ``GET /info/``."""

    name: str
    type: str = ""
    labels: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> ModelInfo:
        labels = data.get("labels") or []
        if isinstance(labels, dict):  # MONAI Label style {name: index}
            labels = [k for k, _ in sorted(labels.items(), key=lambda kv: (kv[1], kv[0]))]
        return cls(name=name, type=str(data.get("type", "")), labels=[str(x) for x in labels],
                   config=dict(data.get("config") or {}), description=str(data.get("description", "")))


@dataclass
class ServerInfo:
    """What ``GET /info/`` says about the server."""

    url: str
    name: str
    version: str
    models: dict[str, ModelInfo]
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def classes(self) -> list[str]:
        """The findings the model knows (labels of the ``counterfactual`` or ``anonymize`` task)."""
        for name in ("counterfactual", "anonymize", "explain"):
            if name in self.models and self.models[name].labels:
                return list(self.models[name].labels)
        return []

    def missing_models(self) -> list[str]:
        """Required models this server does not list."""
        return [m for m in REQUIRED_MODELS if m not in self.models]

    def summary(self) -> str:
        """One line for the panel: server name, models and classes."""
        models = ", ".join(sorted(self.models)) or "none"
        classes = ", ".join(self.classes) or "unknown"
        version = f" {self.version}" if self.version else ""
        return f"{self.name or 'MONAI Label'}{version} at {self.url}: models {models}; classes {classes}."


@dataclass
class Upload:
    """An image to send with a request (never stored by the server, per the REST contract)."""

    filename: str
    data: bytes
    content_type: str = "application/octet-stream"


@dataclass
class InferResponse:
    """The answer of ``POST /infer/<model>``: the JSON part and the image part, when present."""

    model: str
    params: dict[str, Any]
    image: bytes | None = None
    image_name: str | None = None
    image_type: str | None = None


class _ProgressBody:
    """A request body that reports upload progress and stops when the job is cancelled."""

    def __init__(self, data: bytes, progress: ProgressCallback | None, cancel: threading.Event | None,
                 stage: str, waiting: str) -> None:
        self._data = data
        self._pos = 0
        self._progress = progress
        self._cancel = cancel
        self._stage = stage
        self._waiting = waiting

    def __len__(self) -> int:
        return len(self._data)

    def read(self, size: int = -1) -> bytes:
        if self._cancel is not None and self._cancel.is_set():
            raise CancelledError()
        if size is None or size < 0:
            size = len(self._data) - self._pos
        chunk = self._data[self._pos:self._pos + size]
        self._pos += len(chunk)
        if self._progress is not None:
            if self._pos >= len(self._data):
                self._progress(self._waiting, None)
            else:
                self._progress(self._stage, self._pos / len(self._data))
        return chunk


def _multipart(fields: Iterable[tuple[str, str | None, bytes, str]]) -> tuple[bytes, str]:
    """Encode ``(name, filename, data, content type)`` parts as multipart/form-data."""
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, filename, data, ctype in fields:
        out += f"--{boundary}\r\n".encode()
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            safe = filename.replace('"', "").replace("\r", "").replace("\n", "")
            disposition += f'; filename="{safe}"'
        out += f"Content-Disposition: {disposition}\r\nContent-Type: {ctype}\r\n\r\n".encode()
        out += data
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def parse_multipart(body: bytes, content_type: str) -> list[tuple[str, str | None, str, bytes]]:
    """Split a multipart response into ``(field name, filename, content type, payload)``."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError("the response is not multipart")
    parts = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition") or ""
        filename = part.get_filename()
        payload = part.get_payload(decode=True) or b""
        parts.append((str(name), filename, part.get_content_type(), payload))
    return parts


def _detail(body: bytes) -> str:
    """The server's own reason (``{"detail": ...}``), or a short excerpt of the body."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text.splitlines()[0][:300] if text else ""
    detail = data.get("detail", data) if isinstance(data, dict) else data
    if isinstance(detail, list):  # FastAPI validation errors: [{"loc": ..., "msg": ...}]
        msgs = [str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail]
        return "; ".join(msgs)
    return str(detail)


class ServerClient:
    """Talks to one server. ``verify`` is True (system CAs), or the path of a CA bundle for private CAs;
    ``token`` an access token from :meth:`login` for servers with token auth (sent as a Bearer token).

    ``read_timeout`` bounds the wait for each answer (inference runs while the client waits).
    ``cancel`` events passed to the calls stop uploads/downloads between chunks; a request already
    waiting for the server is abandoned by the job runner instead (the server finishes it on its own).
    """

    def __init__(self, url: str, *, read_timeout: float = 120.0, connect_timeout: float = CONNECT_TIMEOUT,
                 verify: bool | str = True, session: requests.Session | None = None,
                 token: Token | None = None) -> None:
        self.url = normalize_server_url(url)
        self.read_timeout = float(read_timeout)
        self.connect_timeout = float(connect_timeout)
        self.verify = verify if verify not in ("", None) else True
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", "SlicerCaseAnonymizer/0.1")
        self.session.trust_env = False  # a proxy from the environment must not see patient images silently
        self.token = token
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token.access_token}"

    # -- plumbing ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = self.url + path
        timeout = (self.connect_timeout, self.read_timeout)
        try:
            return self.session.request(method, url, timeout=timeout, verify=self.verify, **kwargs)
        except CancelledError:
            raise
        except requests.exceptions.SSLError as exc:
            raise CertificateError(
                f"The certificate of {self.url} could not be verified; if the server uses a private "
                f"certificate authority, choose its CA bundle in the connection settings.", str(exc)) from exc
        except requests.exceptions.ConnectTimeout as exc:
            raise ServerTimeoutError(
                f"The server at {self.url} did not accept a connection within {self.connect_timeout:g} s; "
                f"check the address and the network.", str(exc)) from exc
        except requests.exceptions.Timeout as exc:
            raise ServerTimeoutError(
                f"The server at {self.url} did not answer within {self.read_timeout:g} s; it may be busy: "
                f"try again or raise the timeout.", str(exc)) from exc
        except requests.exceptions.ConnectionError as exc:
            if isinstance(exc.__context__, CancelledError):
                raise CancelledError() from exc
            raise ServerUnreachableError(
                f"Cannot reach the server at {self.url}; check that it is running and that the address "
                f"is right.", str(exc)) from exc
        except requests.exceptions.RequestException as exc:
            raise ServerUnreachableError(f"The request to {self.url} failed: {exc}.", repr(exc)) from exc

    def _raise_for_status(self, response: requests.Response, model: str | None = None,
                          body: bytes | None = None) -> None:
        status = response.status_code
        if status < 400:
            return
        body = response.content if body is None else body
        detail = _detail(body)
        text = body[:4000].decode("utf-8", "replace")
        details = f"HTTP {status} from {response.request.method} {response.url}\n{text}"
        reason = detail.rstrip(".") if detail else ""
        lowered = detail.lower()
        no_model = status == 404 and (not detail or detail == "Not Found" or "model" in lowered)
        # MONAI Label itself answers an unknown model with a bare 500 ("... no model 'x' available")
        no_model = no_model or (status >= 500 and "model" in lowered and ("no model" in lowered
                                                                           or "not initialized" in lowered))
        if model is not None and no_model:
            raise ModelNotFoundError(
                f"The server has no '{model}' model{': ' + reason if reason and reason != 'Not Found' else ''}; "
                f"check that it runs the monai-anon app.", status, detail, details)
        if status in (400, 404, 413, 415, 422):
            what = {413: "The server refused the image as too large",
                    415: "The server cannot read the image",
                    404: "The server could not find what was asked for"}.get(status, "The server refused the image")
            raise ImageRefusedError(f"{what}: {reason or 'no reason given'}.", status, detail, details)
        if status == 401:
            if self.token is not None:
                sentence = (f"The server at {self.url} no longer accepts the login of {self.token.username} (it may "
                            f"have expired); log in again.")
            else:
                sentence = f"The server at {self.url} requires a login; log in with your user name and password."
            raise LoginRequiredError(sentence, status, detail, details)
        if status == 403:
            raise ServerResponseError(
                f"The server refused access (HTTP {status}){': ' + reason if reason else ''}.", status, detail,
                details)
        if status >= 500:
            raise ServerFailedError(
                f"The server failed while processing the request (HTTP {status})"
                f"{': ' + reason if reason else '; see the server log'}.", status, detail, details)
        raise ServerResponseError(f"The server answered HTTP {status}{': ' + reason if reason else ''}.",
                                  status, detail, details)

    # -- API ----------------------------------------------------------------------------------------
    def auth_enabled(self) -> bool:
        """``GET /auth/``: whether the server asks for a login (MONAI Label's token auth)."""
        response = self._request("GET", "/auth/")
        if response.status_code == 404:  # not a MONAI Label server, or one without its auth router
            return False
        self._raise_for_status(response)
        try:
            return bool(response.json().get("enabled"))
        except (ValueError, AttributeError):
            return False

    def login(self, username: str, password: str) -> Token | None:
        """``POST /auth/token``: exchange a user name and password for an access token (None when the server
        has no login). The password is sent once and not kept; the client uses the token from then on."""
        if not username or not password:
            raise LoginRequiredError("Enter your user name and password to log in.", 401)
        response = self._request("POST", "/auth/token", data={"username": username, "password": password,
                                                              "grant_type": "password"})
        if response.status_code == 401:
            raise LoginRequiredError(f"The server at {self.url} did not accept the user name or password.", 401,
                                     _detail(response.content), response.text[:2000])
        self._raise_for_status(response)
        try:
            token = token_from_answer(response.json(), username)
        except (ValueError, AttributeError) as exc:
            raise NotAServerError(f"The login answer of {self.url} could not be read.", response.text[:2000]) from exc
        self.token = token
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token.access_token}"
        return token

    def info(self) -> ServerInfo:
        """``GET /info/``: the server's name, version and models."""
        response = self._request("GET", "/info/")
        self._raise_for_status(response)
        try:
            data = response.json()
            models = data["models"]
            if not isinstance(models, dict):
                raise TypeError("'models' is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise NotAServerError(
                f"Something answers at {self.url}, but it is not a MONAI Label server (no model list at /info/).",
                f"{exc}\n{response.text[:2000]}") from exc
        return ServerInfo(
            url=self.url, name=str(data.get("name", "")), version=str(data.get("version", "")),
            models={str(k): ModelInfo.from_json(str(k), v if isinstance(v, dict) else {}) for k, v in models.items()},
            raw=data)

    def infer(self, model: str, params: dict[str, Any] | None = None, *, upload: Upload | None = None,
              image_id: str | None = None, output: str = "all", progress: ProgressCallback | None = None,
              cancel: threading.Event | None = None) -> InferResponse:
        """``POST /infer/<model>`` with an uploaded image or a datastore image id."""
        if upload is None and not image_id:
            raise ValueError("give an upload or an image id")
        fields: list[tuple[str, str | None, bytes, str]] = [
            ("params", None, json.dumps(params or {}).encode("utf-8"), "application/json")]
        if upload is not None:
            fields.append(("file", upload.filename, upload.data, upload.content_type))
        body, ctype = _multipart(fields)
        query = {"output": output}
        if image_id:
            query["image"] = image_id
        sending = f"Sending the image to the server ({model})"
        waiting = f"Waiting for the server ({model})"
        stream = _ProgressBody(body, progress, cancel, sending, waiting)
        if progress:
            progress(sending, 0.0)
        response = self._request("POST", f"/infer/{model}", params=query, data=stream,
                                 headers={"Content-Type": ctype}, stream=True)
        try:
            if progress:
                progress(f"Receiving the {model} result", None)
            payload = self._read_body(response, progress, cancel, f"Receiving the {model} result")
        finally:
            response.close()
        try:
            self._raise_for_status(response, model, payload)
        except ServerFailedError as exc:
            # MONAI Label answers an unknown model with a bare 500: ask /info/ whether the model exists
            if exc.status == 500 and not self._has_model(model):
                raise ModelNotFoundError(
                    f"The server has no '{model}' model; check that it runs the monai-anon app.", exc.status,
                    exc.detail, exc.details) from exc
            raise
        return self._parse_infer(model, response, payload)

    def _has_model(self, model: str) -> bool:
        """Whether ``/info/`` lists ``model`` (True when that cannot be found out)."""
        try:
            return model in self.info().models
        except Exception:
            return True

    def _read_body(self, response: requests.Response, progress: ProgressCallback | None,
                   cancel: threading.Event | None, stage: str) -> bytes:
        total = int(response.headers.get("Content-Length") or 0)
        chunks = bytearray()
        try:
            for chunk in response.iter_content(_CHUNK):
                if cancel is not None and cancel.is_set():
                    raise CancelledError()
                chunks += chunk
                if progress and total:
                    progress(stage, min(1.0, len(chunks) / total))
        except requests.exceptions.RequestException as exc:
            if isinstance(exc, requests.exceptions.Timeout):
                raise ServerTimeoutError(
                    f"The server at {self.url} stopped sending within {self.read_timeout:g} s; try again.",
                    str(exc)) from exc
            raise ServerUnreachableError(f"The connection to {self.url} broke while receiving the result.",
                                         str(exc)) from exc
        return bytes(chunks)

    @staticmethod
    def _parse_infer(model: str, response: requests.Response, payload: bytes) -> InferResponse:
        ctype = response.headers.get("Content-Type", "")
        main = ctype.split(";")[0].strip().lower()
        if main.startswith("multipart/"):
            try:
                parts = parse_multipart(payload, ctype)
            except Exception as exc:
                raise ServerFailedError("The server's answer could not be read (broken multipart).",
                                        response.status_code, "", repr(exc)) from exc
            params: dict[str, Any] = {}
            result = InferResponse(model=model, params=params)
            for name, filename, ptype, data in parts:
                if name == "params":
                    try:
                        params.update(json.loads(data.decode("utf-8") or "{}"))
                    except ValueError as exc:
                        raise ServerFailedError("The server's JSON answer could not be read.",
                                                response.status_code, "", data[:2000].decode("latin-1")) from exc
                elif filename is not None or name in ("image", "file"):
                    result.image, result.image_name, result.image_type = data, filename or name, ptype
            return result
        if main == "application/json":
            try:
                data = json.loads(payload.decode("utf-8") or "{}")
            except ValueError as exc:
                raise ServerFailedError("The server's JSON answer could not be read.", response.status_code, "",
                                        payload[:2000].decode("latin-1")) from exc
            if isinstance(data, str):  # MONAI Label may double-encode JSON results
                try:
                    data = json.loads(data)
                except ValueError:
                    data = {"result": data}
            return InferResponse(model=model, params=data if isinstance(data, dict) else {"result": data})
        # a bare file (output=image)
        disposition = response.headers.get("Content-Disposition", "")
        name = None
        if "filename=" in disposition:
            name = disposition.split("filename=", 1)[1].strip().strip('"')
        return InferResponse(model=model, params={}, image=payload, image_name=name, image_type=main)
