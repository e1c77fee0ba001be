"""The ASGI app ``monai-anon serve`` runs (``--uvicorn_app monai_anon_app.server.rest:app``).

It is MONAI Label's own FastAPI app (every router, RBAC, sessions, datastore endpoints unchanged) with:

* ``POST /infer/{model}`` replaced by :func:`infer`, which never blocks the event loop: it validates
  the request (4xx + one sentence for every bad input), resolves the input to a local file off the
  loop, runs the task in the :class:`~monai_anon_app.server.worker_pool.InferencePool` worker processes and
  streams the result back; uploads go to a private per-request folder that is removed afterwards and
  are never added to the datastore;
* ``POST /train/{model}`` answering 404 for unknown trainers and 422 for bad options before MONAI Label
  starts its training subprocess;
* ``POST /auth/token`` answering a refused login with 401 (:mod:`monai_anon_app.server.login`);
* one-sentence JSON errors for FastAPI's request validation;
* MONAI Label's token check replaced by :func:`monai_anon_app.server.auth.current_user` when auth is on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import BackgroundTasks, Body, Depends, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from monailabel.app import app
from monailabel.config import RBAC_ADMIN, RBAC_USER, settings
from monailabel.endpoints.train import run_model
from monailabel.endpoints.user.auth import RBAC, User, get_current_user
from monailabel.interfaces.utils.app import app_instance
from starlette.requests import Request

from monai_anon_app.imageio.formats import IMAGE_KINDS, sniff_format
from monai_anon_app.server.auth import current_user
from monai_anon_app.server.datastore import image_path
from monai_anon_app.server.infer import find_task
from monai_anon_app.server.launch import URL_VARIABLE
from monai_anon_app.server.login import access_token
from monai_anon_app.server.params import parse_params_json
from monai_anon_app.server.request_errors import RequestError
from monai_anon_app.server.uploads import ZIP_REFUSED, check_id, client_name, upload_suffix
from monai_anon_app.server.worker_pool import InferencePool

__all__ = ["app", "install"]

logger = logging.getLogger(__name__)

SESSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
OUTPUTS = ("image", "json", "all")
CHUNK = 1 << 20
_pool: InferencePool | None = None


# -- helpers -----------------------------------------------------------------------------------------
def pool() -> InferencePool:
    """The process-wide inference pool, sized from the app's settings."""
    global _pool
    if _pool is None:
        rt = app_instance().runtime
        _pool = InferencePool(rt.workers, rt.threads, rt.max_pending, timeout_s=settings.MONAI_LABEL_INFER_TIMEOUT,
                              niceness=rt.niceness, model_base=str(rt.model_base), publish_root=str(rt.publish_root))
    return _pool


def resolve_image(image_id: str, what: str = "image") -> str:
    """Local path of a datastore image (:func:`~monai_anon_app.server.datastore.image_path`; blocking)."""
    return image_path(app_instance().datastore(), image_id, what)


async def save_upload(upload: UploadFile, folder: Path, limit: int, archives: bool = False) -> Path:
    """Copy an uploaded image (or, with ``archives``, a zip) into ``folder`` as ``upload`` + the suffix of its
    content (415 if it is neither). Messages name it as the client did (:func:`client_name`)."""
    name = client_name(upload.filename)
    size = upload.size
    if size is not None and size > limit:
        raise RequestError(413, f"{name} is {size / 2**20:.0f} MiB; the largest upload accepted is "
                                f"{limit / 2**20:.0f} MiB")
    raw = folder / "upload"
    written = 0
    async with await anyio.open_file(raw, "wb") as out:
        while chunk := await upload.read(CHUNK):
            written += len(chunk)
            if written > limit:
                raise RequestError(413, f"the upload exceeds the largest accepted size of {limit / 2**20:.0f} MiB")
            await out.write(chunk)
    if written == 0:
        raise RequestError(415, f"{name} is empty")
    fmt = await run_in_threadpool(sniff_format, raw)
    if fmt is None:
        nor = " nor a zip of DICOM files" if archives else ""
        raise RequestError(415, f"{name} is not a {IMAGE_KINDS} image{nor}")
    if fmt == "zip" and not archives:
        raise RequestError(415, f"{name} {ZIP_REFUSED}")
    final = raw.with_name(raw.name + upload_suffix(raw, fmt))
    raw.rename(final)
    return final


def _multipart_head(boundary: str, info: dict[str, Any], name: str, media_type: str) -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n"
            f"Content-Type: application/json\r\n\r\n{json.dumps(info)}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            f"Content-Type: {media_type}\r\n\r\n").encode()


def multipart_response(info: dict[str, Any], result: tuple[str, bytes] | Path) -> Response:
    """``params`` (JSON) + ``image`` (the result) as multipart/form-data with a Content-Length (MONAI
    Label's client parses it with ``cgi.FieldStorage`` and needs the length); files are streamed."""
    boundary = "monai-anon-" + os.urandom(12).hex()
    tail = f"\r\n--{boundary}--\r\n".encode()
    content_type = f"multipart/form-data; boundary={boundary}"
    if isinstance(result, tuple):
        name, data = result
        return Response(_multipart_head(boundary, info, name, media_type(name)) + data + tail, media_type=content_type)
    head = _multipart_head(boundary, info, result.name, media_type(result.name))
    length = len(head) + result.stat().st_size + len(tail)

    async def body() -> AsyncIterator[bytes]:
        yield head
        async with await anyio.open_file(result, "rb") as fh:
            while chunk := await fh.read(CHUNK):
                yield chunk
        yield tail

    return StreamingResponse(body(), media_type=content_type, headers={"Content-Length": str(length)})


def media_type(name: str) -> str:
    return "application/zip" if name.endswith(".zip") else "application/octet-stream"


def respond(result: Any, info: dict[str, Any], output: str | None, folder: Path,
            background: BackgroundTasks) -> Response:
    """The reply for ``output`` (json, image, or both as multipart); the request folder goes afterwards."""
    background.add_task(shutil.rmtree, folder, True)
    if output == "json" or result is None:
        return JSONResponse(info, background=background)
    if output == "image":
        if isinstance(result, tuple):
            name, data = result
            return Response(data, media_type=media_type(name), background=background,
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})
        path = Path(result)
        return FileResponse(path, media_type=media_type(path.name), filename=path.name, background=background)
    response = multipart_response(info, result if isinstance(result, tuple) else Path(result))
    response.background = background
    return response


# -- endpoints ---------------------------------------------------------------------------------------
async def infer(
    model: str,
    request: Request,
    background_tasks: BackgroundTasks,
    image: str = "",
    session_id: str = "",
    params: str = Form("{}"),
    file: UploadFile | None = File(None),
    label: UploadFile | None = File(None),
    output: str | None = None,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
) -> Response:
    """Run an infer task (see ``docs/rest.md``)."""
    instance = app_instance()
    task = find_task(instance._infers, model)
    if output not in (None, *OUTPUTS):
        raise RequestError(422, f"output must be one of {', '.join(OUTPUTS)}, not {output[:40]!r}")
    options = task.parse(parse_params_json(params))
    export = task.name == "export"
    image_ids = [i for i in request.query_params.getlist("image") if i] or ([image] if image else [])
    if len(image_ids) > 1 and not export:
        raise RequestError(422, f"give one image id; only the export task takes several (got {len(image_ids)})")
    rt = instance.runtime
    folder = rt.request_dir()
    try:
        from_datastore, input_name, extra = False, None, []
        if session_id:
            input_path, input_name = await run_in_threadpool(_session_image, check_id(session_id, "session id"))
        elif file is not None and (file.filename or file.size):
            input_path = str(await save_upload(file, folder, rt.max_upload_bytes, archives=export))
            input_name = client_name(file.filename)
        elif image_ids:
            paths = [await run_in_threadpool(resolve_image, check_id(i)) for i in dict.fromkeys(image_ids)]
            input_path, extra = paths[0], paths[1:]
            from_datastore = True
        else:
            raise RequestError(422, "give an image id (?image=), a session id (?session_id=) or upload a file")
        reference = None
        if options.get("reference"):
            reference = await run_in_threadpool(resolve_image, check_id(options["reference"], "reference id"),
                                                "reference image")
        job = task.job(input_path, options, str(folder), reference, cacheable=from_datastore, input_name=input_name,
                       extra_inputs=extra)
        job.want_file = output != "json" or export
        job.inline = True
        result, info = await pool().run(job)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return respond(result, info, output, folder, background_tasks)


def _session_image(session_id: str) -> tuple[str, str | None]:
    """The session's image (a file, or a folder of several files) and how messages name a folder (MONAI Label
    names it after a temporary file of its own)."""
    sessions = app_instance().sessions()
    if sessions is None:
        raise RequestError(406, "sessions are disabled on this server")
    if not SESSION_PATTERN.match(session_id):
        raise RequestError(400, f"session id {session_id[:80]!r} is not valid")
    info = sessions.get_session(session_id)
    if not info or not info.image or not os.path.exists(info.image):
        raise RequestError(404, f"session {session_id!r} does not exist or has expired")
    return info.image, ("the session's files" if os.path.isdir(info.image) else None)


async def train(
    model: str,
    params: dict | None = Body(None),
    run_sync: bool = False,
    enqueue: bool = False,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN)),
) -> Any:
    """Start a train task in MONAI Label's training subprocess (see ``docs/rest.md``)."""

    instance = app_instance()
    task = instance._trainers.get(model)
    if task is None:
        names = ", ".join(instance._trainers) or "none"
        raise RequestError(404, f"unknown trainer {model[:80]!r}; the trainers are {names}")
    if run_sync:
        raise RequestError(422, "run_sync is not supported; training runs in the background, poll GET /train/")
    task.parse(params or {})
    return await run_in_threadpool(run_model, model, params, False, enqueue)


# -- installation ------------------------------------------------------------------------------------
def _replace_route(target, path: str, method: str, endpoint, summary: str) -> None:
    """Add ``endpoint`` in front of every other route, so it answers instead of MONAI Label's (whose
    routers stay included; FastAPI matches routes in order)."""
    full = settings.MONAI_LABEL_API_STR + path
    target.add_api_route(full, endpoint, methods=[method], summary=summary)
    route = target.router.routes.pop()
    target.router.routes.insert(0, route)


async def request_error(_: Request, exc: RequestError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return JSONResponse({"detail": "The request body is not valid JSON."}, status_code=422)
    where = ".".join(str(p) for p in first.get("loc", ())[1:] if isinstance(p, str)) or "request"
    message = f"Invalid {where}: {str(first.get('msg', 'malformed request')).rstrip('.')}."
    return JSONResponse({"detail": message}, status_code=422)


def install(target) -> None:
    """Apply the changes listed in the module docstring to MONAI Label's FastAPI app ``target``."""
    _replace_route(target, "/infer/{model}", "POST", infer, f"{RBAC_USER}Run an infer task (monai-anon)")
    _replace_route(target, "/train/{model}", "POST", train, f"{RBAC_ADMIN}Start a train task (monai-anon)")
    _replace_route(target, "/auth/token", "POST", access_token, "Fetch an access token (monai-anon: 401 on a "
                                                                  "wrong password)")
    target.add_exception_handler(RequestError, request_error)
    target.add_exception_handler(RequestValidationError, validation_error)
    if settings.MONAI_LABEL_AUTH_ENABLE:
        target.dependency_overrides[get_current_user] = current_user

    original = target.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a):
        async with original(a) as state:
            worker_pool = pool()
            await worker_pool.start()  # before the server listens: the first request finds the model loaded
            logger.info("monai-anon serve: ready at %s (%s)", os.environ.get(URL_VARIABLE, "the address above"),
                        worker_pool.describe())
            try:
                yield state
            finally:
                await run_in_threadpool(worker_pool.shutdown)

    target.router.lifespan_context = lifespan


install(app)
