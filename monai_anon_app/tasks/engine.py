"""What each infer task does, on files: the part that runs in an inference worker process.

A :class:`Job` names everything a task needs (input path, parsed options, model folders, output
folder) as plain, picklable values; :func:`run_job` reads the input, calls the inference API, writes
the result file into ``job.out_dir`` and returns ``(result path or None, JSON-ready dict)``. Errors are
:class:`~monai_anon_app.tasks.errors.RequestError` (or the library errors it maps).
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..inference import MAX_SIDE
from .errors import RequestError
from .inputs import InputImage, dicom_files, load_input, nifti_bytes, probe_format, write_result
from .models import ModelStore

__all__ = ["DEID_FLAGS", "TASKS", "Job", "run_job", "store_for"]

DEID_FLAGS = ("retain_modified_dates", "retain_full_dates", "retain_patient_characteristics",
              "retain_device_identity", "retain_institution_identity", "clean_descriptors", "retain_uids",
              "retain_safe_private")
RESULT_NAME = {"anonymize": "anonymized.nii", "counterfactual": "counterfactual.nii", "explain": "cases.nii",
               "export": "anonymized-study.zip"}
TASKS = tuple(RESULT_NAME)


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
    cacheable: bool = False  # the input is a datastore image (never an upload or a session file)
    want_file: bool = True  # False when the client asked for JSON only
    inline: bool = False  # return an image result as (name, bytes) instead of writing a file
    extra: dict[str, Any] = field(default_factory=dict)


_stores: dict[tuple[str | None, str], ModelStore] = {}
CACHE_BYTES = 256 * 2**20
INLINE_BYTES = 64 * 2**20  # larger image results go through a file
MAX_RESULT_BYTES = 2 * 2**30
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


def run_job(job: Job) -> tuple[str | tuple[str, bytes] | None, dict[str, Any]]:
    """Run ``job`` (see the module docstring); with ``job.inline`` an image result comes back as
    ``(file name, bytes)`` instead of a file."""
    if job.task not in TASKS:
        raise RequestError(404, f"unknown task {job.task!r}; the tasks are {', '.join(TASKS)}")
    store = store_for(job.model_base, job.publish_root)
    out = Path(job.out_dir) / RESULT_NAME[job.task]
    if job.task == "export":
        return _export(job, store, out)
    if job.cacheable and not Path(job.input).is_dir():
        src = cached_input(job.input, job.max_side, job.out_dir)
    else:
        src = load_input(job.input, job.max_side, scratch=job.out_dir)
    anonymizer = store.anonymizer()
    opts = job.options
    pixels = src.image.pixels
    if job.task == "anonymize":
        res = anonymizer.anonymize(pixels, seed=opts["seed"], candidates=opts["candidates"], mode=opts["mode"])
        images, info = [res.image], res.info()
    elif job.task == "counterfactual":
        reference = None
        if job.reference is not None:
            reference = load_input(job.reference, job.max_side, scratch=job.out_dir).image.pixels
        if opts["target"] is None and reference is None:
            raise RequestError(422, "give a target class or a reference image id")
        res = anonymizer.counterfactual(pixels, target=opts["target"], reference=reference, mode=opts["mode"])
        images, info = [res.image], res.info()
    else:
        size = opts["k"] * pixels.size * 4
        if size > MAX_RESULT_BYTES:
            raise RequestError(413, f"{opts['k']} cases of {pixels.shape[0]}×{pixels.shape[1]} pixels would make a "
                                    f"{size / 2**30:.1f} GiB result; ask for fewer cases or send a smaller image")
        res = anonymizer.explain(pixels, k=opts["k"], seed=opts["seed"])
        images, info = [c.image for c in res.cases], res.info()
    info["model"] = store.name()
    info["input"] = _describe(src)
    if not job.want_file:
        return None, info
    if job.inline and sum(im.size for im in images) * 4 <= INLINE_BYTES:
        return (out.name, nifti_bytes(src, images)), info
    write_result(out, src, images)
    return str(out), info


def _describe(src: InputImage) -> dict[str, Any]:
    import numpy as np

    h, w = src.image.pixels.shape
    spacing = [round(float(np.linalg.norm(src.affine[:3, i])), 6) for i in (1, 0)]  # (row, column) mm
    return {"format": src.image.format, "rows": h, "columns": w, "spacing": spacing}


def _export(job: Job, store: ModelStore, out: Path) -> tuple[str, dict[str, Any]]:
    from ..dicom.export import StowError, export_study_zip, stow_study
    from ..dicom.keys import load_key
    from ..dicom.options import DeidOptions

    opts = job.options
    source = Path(job.input)
    if source.is_dir():
        files = dicom_files(source)
        if not files:
            raise RequestError(415, f"{source.name} holds no DICOM files; export takes DICOM studies")
    else:
        if probe_format(source) != "dicom":
            raise RequestError(415, f"{source.name} is not DICOM; export takes DICOM studies")
        files = [source]
    flags = {k: bool(opts.get(k, False)) for k in DEID_FLAGS}
    try:
        key = load_key(None, job.key_file) if job.key_file else None
        deid = DeidOptions(**flags, **({"key": key} if key else {}))
    except ValueError as exc:
        raise RequestError(422, str(exc)) from None
    headers_only = bool(opts["headers_only"])
    base_seed = opts["seed"] if opts["seed"] is not None else secrets.randbelow(2**31)
    pixel_fn = None
    if not headers_only:
        anonymizer = store.anonymizer()

        def pixel_fn(pixels, identity_key: str):
            # one synthetic identity per patient (and seed): all of a patient's images get the same
            digest = hashlib.sha256(f"{base_seed}:{identity_key}".encode()).digest()
            seed = int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
            return anonymizer.anonymize(pixels, seed=seed, mode="full").image

    summary = export_study_zip(files, out, deid, pixel_fn, headers_only)
    info: dict[str, Any] = {
        "files": summary.files, "study_uids": summary.study_uids, "seed": None if headers_only else base_seed,
        "headers_only": headers_only,
        "summary": {"done": summary.done, **{k: [{"file": n, "reason": r} for n, r in getattr(summary, k)]
                                            for k in ("refused", "skipped", "failed")}},
        "model_checksum": None if headers_only else store.checksum(), "model": store.name(),
    }
    if opts.get("stow"):
        if not job.stow_url:
            raise RequestError(422, "stow needs a DICOMweb datastore (start the server with --studies URL)")
        try:
            info["stow"] = stow_study([out], job.stow_url).to_dict()
        except StowError as exc:
            raise RequestError(502, str(exc)) from None
    return str(out), info
