"""What each infer task does, on files: the part that runs in an inference worker process.

A :class:`Job` names everything a task needs (input path, parsed options, model folders, output
folder) as plain, picklable values; :func:`run_job` reads the input, calls the inference API, writes
the result file into ``job.out_dir`` and returns ``(result path or None, JSON-ready dict)``. Errors are
:class:`~monai_anon_app.tasks.errors.RequestError` (or the library errors it maps).
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..batch import seed_for
from ..inference import MAX_SIDE
from .errors import RequestError, sentence
from .inputs import InputImage, dicom_files, load_input, nifti_bytes, probe_format, unpack_zip, write_result
from .models import ModelStore

__all__ = ["DEID_FLAGS", "TASKS", "Job", "run_job", "store_for"]

DEID_FLAGS = ("retain_modified_dates", "retain_full_dates", "retain_patient_characteristics",
              "retain_device_identity", "retain_institution_identity", "clean_descriptors", "retain_uids",
              "retain_safe_private")
RESULT_NAME = {"anonymize": "anonymized.nii", "counterfactual": "counterfactual.nii", "explain": "cases.nii",
               "export": "anonymized-study.zip"}
TASKS = tuple(RESULT_NAME)
MAX_UNZIP_BYTES = 4 * 2**30


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
        src = load_input(job.input, job.max_side, scratch=job.out_dir, name=job.input_name)
    anonymizer = store.anonymizer()
    opts = job.options
    pixels = src.image.pixels
    if job.task == "anonymize":
        seed = _base_seed(opts)
        identity_seed = seed_for(seed, _identity_key(job, src))  # as the export of this image will draw it
        res = anonymizer.anonymize(pixels, seed=identity_seed, candidates=opts["candidates"], mode=opts["mode"])
        images, info = [res.image], {**res.info(), "seed": seed, "identity_seed": identity_seed,
                                     "candidates": opts["candidates"]}
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


def _base_seed(opts: dict[str, Any]) -> int:
    """The request's seed, or a fresh random one (reported back either way)."""
    return opts["seed"] if opts.get("seed") is not None else secrets.randbelow(2**31)


def _deid_options(job: Job, **flags: bool):
    """:class:`~monai_anon_app.dicom.options.DeidOptions` with ``flags`` and the server's key."""
    from ..dicom.keys import load_key
    from ..dicom.options import DeidOptions

    try:
        key = load_key(None, job.key_file) if job.key_file else None
        return DeidOptions(**flags, **({"key": key} if key else {}))
    except ValueError as exc:
        raise RequestError(422, str(exc)) from None


def _identity_key(job: Job, src: InputImage) -> str | None:
    """The de-identifier's keyed patient key of a DICOM input, exactly as its export computes it (None for
    PNG and NIfTI, which name no patient); see :func:`monai_anon_app.batch.seed_for`."""
    if not src.dicom_files:
        return None
    import pydicom

    from ..dicom.batch import deidentifier

    header = pydicom.dcmread(str(src.dicom_files[0]), stop_before_pixels=True, force=True)
    return deidentifier(_deid_options(job)).identity_key(header)


def _export(job: Job, store: ModelStore, out: Path) -> tuple[str, dict[str, Any]]:
    from ..dicom.export import export_study_zip
    from ..dicom.pixel_change import of_command

    opts = job.options
    if opts.get("stow") and not job.stow_url:
        raise RequestError(422, "stow needs a DICOMweb datastore (start the server with --studies URL)")
    files, not_dicom = _export_sources(job)
    deid = _deid_options(job, **{k: bool(opts.get(k, False)) for k in DEID_FLAGS})
    headers_only = bool(opts["headers_only"])
    base_seed = _base_seed(opts)
    pixel_fn = None
    if not headers_only:
        anonymizer = store.anonymizer()

        def pixel_fn(pixels, identity_key: str):  # the anonymize task's rule: its preview is this image
            return anonymizer.anonymize(pixels, seed=seed_for(base_seed, identity_key), candidates=opts["candidates"],
                                        mode=opts["mode"]).image

    change = of_command("anonymize", opts["mode"], headers_only=headers_only)
    summary = export_study_zip(files, out, deid, pixel_fn, change)
    summary.skipped[:0] = not_dicom
    info: dict[str, Any] = {
        "files": summary.files, "study_uids": summary.study_uids, "seed": None if headers_only else base_seed,
        "headers_only": headers_only, **({} if headers_only else {"candidates": opts["candidates"],
                                                                   "mode": opts["mode"]}),
        "summary": {"done": summary.done, **{k: [{"file": n, "reason": r} for n, r in getattr(summary, k)]
                                            for k in ("refused", "skipped", "failed")}},
        "model_checksum": None if headers_only else store.checksum(), "model": store.name(),
    }
    if opts.get("stow"):
        info["stow"] = _stow(out, job.stow_url)
    return str(out), info


def _export_sources(job: Job) -> tuple[list[Path], list[tuple[str, str]]]:
    """The DICOM files of every input of an export (a DICOM file, a series folder or a zip of DICOM files),
    and the files of a zip that are not DICOM (reported as skipped, never exported)."""
    from ..dicom.files import is_dicom

    files: list[Path] = []
    not_dicom: list[tuple[str, str]] = []
    for i, item in enumerate([job.input, *job.extra_inputs]):
        source = Path(item)
        name = (job.input_name if i == 0 else None) or source.name
        if source.is_dir():
            found = dicom_files(source)
        elif (fmt := probe_format(source)) == "zip":
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


def _stow(out: Path, url: str) -> dict[str, Any]:
    """STOW-RS the exported zip; a failure is reported (``ok`` false, ``error``), never thrown: the zip was
    produced and the client still gets it."""
    from ..dicom.export import StowError, stow_study

    try:
        return {"ok": True, **stow_study([out], url).to_dict()}
    except StowError as exc:
        logger.warning("STOW-RS of an export failed: %s", exc)
        return {"ok": False, "url": url, "error": sentence(str(exc))}
