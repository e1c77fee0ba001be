"""The plumbing every infer task shares when it runs on files in an inference worker process.

A :class:`Job` names everything a task needs (input path, parsed options, model folders, output
folder) as plain, picklable values. A task (:mod:`monai_anon_app.server.infer`) reads its input with
:func:`load_source`, computes, and hands its images to :func:`deliver`, which returns
``(result, JSON-ready dict)``: the result is None (JSON only), ``(file name, bytes)`` or the path of a file
in ``job.out_dir``. Errors are :class:`~monai_anon_app.server.request_errors.RequestError` (or the library
errors it maps).
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from monai_anon_app.dicom.export import StowError, stow_study
from monai_anon_app.dicom.files import is_dicom
from monai_anon_app.dicom.keys import load_key
from monai_anon_app.dicom.options import DeidOptions
from monai_anon_app.dicom.process import deidentifier
from monai_anon_app.imageio.formats import sniff_format
from monai_anon_app.inference import MAX_SIDE
from monai_anon_app.server.model_store import ModelStore
from monai_anon_app.server.request_errors import RequestError, sentence
from monai_anon_app.server.settings import INLINE_RESULT_BYTES
from monai_anon_app.server.uploads import (
    InputImage,
    dicom_files,
    load_input,
    nifti_bytes,
    unpack_zip,
    write_result,
)

__all__ = [
    "Job",
    "JobResult",
    "base_seed",
    "cached_input",
    "deid_options",
    "deliver",
    "describe_input",
    "export_sources",
    "identity_key",
    "load_source",
    "store_for",
    "stow",
]

MAX_UNZIP_BYTES = 4 * 2**30
#: what a task returns: the result (None, ``(file name, bytes)`` or a file path) and its JSON
JobResult = tuple[str | tuple[str, bytes] | None, dict[str, Any]]


@dataclass
class Job:
    """One infer request, resolved to local files."""

    task: str
    input: str
    options: dict[str, Any]
    out_dir: str
    model_base: str | None
    publish_root: str
    reference: str | None = None
    stow_url: str | None = None
    key_file: str | None = None
    max_side: int = MAX_SIDE
    input_name: str | None = None  # how messages name the input (an upload: the client's file name)
    extra_inputs: list[str] = field(default_factory=list)  # export: more datastore images, exported together
    max_unzip_bytes: int = MAX_UNZIP_BYTES  # export: largest uncompressed size of an uploaded zip
    cacheable: bool = False  # the input is a datastore image (never an upload or a session file)
    want_file: bool = True  # False when the client asked for JSON only
    inline: bool = False  # return an image result as (name, bytes) instead of writing a file
    extra: dict[str, Any] = field(default_factory=dict)


logger = logging.getLogger(__name__)
_stores: dict[tuple[str | None, str], ModelStore] = {}
CACHE_BYTES = 256 * 2**20
_inputs: OrderedDict[tuple, InputImage] = OrderedDict()


def cached_input(path: str, max_side: int, scratch: str) -> InputImage:
    """:func:`load_input` for datastore images, remembered per file content (path, size, time) in this
    worker, up to :data:`CACHE_BYTES` of pixels: repeated requests on one image skip decoding it.
    Uploads and session files never come here: nothing a client sent is kept after its request."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, max_side)
    hit = _inputs.get(key)
    if hit is not None:
        _inputs.move_to_end(key)
        return hit
    value = load_input(path, max_side, scratch=scratch)
    _inputs[key] = value
    while sum(v.image.pixels.nbytes for v in _inputs.values()) > CACHE_BYTES and len(_inputs) > 1:
        _inputs.popitem(last=False)
    return value


def store_for(base: str | None, root: str) -> ModelStore:
    """One :class:`ModelStore` per (base, publish root) in this process, so loaded models are reused."""
    key = (base, root)
    if key not in _stores:
        _stores[key] = ModelStore(base, root)
    return _stores[key]


def load_source(job: Job) -> InputImage:
    """The job's input image (datastore images through :func:`cached_input`)."""
    if job.cacheable and not Path(job.input).is_dir():
        return cached_input(job.input, job.max_side, job.out_dir)
    return load_input(job.input, job.max_side, scratch=job.out_dir, name=job.input_name)


def deliver(job: Job, out: Path, src: InputImage, images: list[np.ndarray], info: dict[str, Any]) -> JobResult:
    """An image result in ``src``'s geometry: nothing when the client wants JSON only, ``(name, bytes)`` for an
    inline job up to :data:`~monai_anon_app.server.settings.INLINE_RESULT_BYTES`, else the NIfTI file ``out``."""
    if not job.want_file:
        return None, info
    if job.inline and sum(im.size for im in images) * 4 <= INLINE_RESULT_BYTES:
        return (out.name, nifti_bytes(src, images)), info
    write_result(out, src, images)
    return str(out), info


def describe_input(src: InputImage) -> dict[str, Any]:
    h, w = src.image.pixels.shape
    spacing = [round(float(np.linalg.norm(src.affine[:3, i])), 6) for i in (1, 0)]  # (row, column) mm
    return {"format": src.image.format, "rows": h, "columns": w, "spacing": spacing}


def base_seed(opts: dict[str, Any]) -> int:
    """The request's seed, or a fresh random one (reported back either way)."""
    return opts["seed"] if opts.get("seed") is not None else secrets.randbelow(2**31)


def deid_options(job: Job, **flags: bool):
    """:class:`~monai_anon_app.dicom.options.DeidOptions` with ``flags`` and the server's key."""

    try:
        key = load_key(None, job.key_file) if job.key_file else None
        return DeidOptions(**flags, **({"key": key} if key else {}))
    except ValueError as exc:
        raise RequestError(422, str(exc)) from None


def identity_key(job: Job, src: InputImage) -> str | None:
    """The de-identifier's keyed patient key of a DICOM input, exactly as its export computes it (None for
    PNG and NIfTI, which name no patient); see :func:`monai_anon_app.inference.seeds.seed_for`."""
    if not src.dicom_files:
        return None


    header = pydicom.dcmread(str(src.dicom_files[0]), stop_before_pixels=True, force=True)
    return deidentifier(deid_options(job)).identity_key(header)


def export_sources(job: Job) -> tuple[list[Path], list[tuple[str, str]]]:
    """The DICOM files of every input of an export (a DICOM file, a series folder or a zip of DICOM files),
    and the files of a zip that are not DICOM (reported as skipped, never exported)."""

    files: list[Path] = []
    not_dicom: list[tuple[str, str]] = []
    for i, item in enumerate([job.input, *job.extra_inputs]):
        source = Path(item)
        name = (job.input_name if i == 0 else None) or source.name
        if source.is_dir():
            found = dicom_files(source)
        elif (fmt := sniff_format(source)) == "zip":
            folder = Path(job.out_dir) / f"unzipped-{i}"
            unpacked = unpack_zip(source, folder, job.max_unzip_bytes, name)
            found = [f for f in unpacked if is_dicom(f)]
            not_dicom += [(str(f.relative_to(folder)), "not a DICOM file") for f in unpacked if f not in found]
        elif fmt == "dicom":
            found = [_named(source, name, Path(job.out_dir) / f"named-{i}")]
        else:
            raise RequestError(415, f"{name} is not DICOM; export takes a DICOM file, a series or a zip of DICOM files")
        if not found:
            raise RequestError(415, f"{name} holds no DICOM files; export takes DICOM studies")
        files += [f for f in found if f not in files]
    return files, not_dicom


def _named(path: Path, name: str, folder: Path) -> Path:
    """``path`` under the name its client knows it by (a link in ``folder``): summaries list files by name."""
    if name == path.name:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / name
    link.symlink_to(path.resolve())
    return link


def stow(out: Path, url: str) -> dict[str, Any]:
    """STOW-RS the exported zip; a failure is reported (``ok`` false, ``error``), never thrown: the zip was
    produced and the client still gets it."""

    try:
        return {"ok": True, **stow_study([out], url).to_dict()}
    except StowError as exc:
        logger.warning("STOW-RS of an export failed: %s", exc)
        return {"ok": False, "url": url, "error": sentence(str(exc))}
