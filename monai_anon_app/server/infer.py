"""The infer tasks: what MONAI Label lists for ``GET /info/`` (names, options, classes) and what each does.

Each task is one class: its options, and ``run(job)``, which does its work on files (in an inference worker
process, through :func:`run_job`, or in-process when MONAI Label calls the task object itself: its
``app.infer``, batch inference, ``monailabel.interfaces.utils.app``). A new task is a new class added to
:data:`INFER_TASKS`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from monai_anon_app.defaults import ANONYMIZE_MODE, CANDIDATES, COUNTERFACTUAL_MODE, MODE_HELP, MODES
from monai_anon_app.dicom.export import export_study_zip
from monai_anon_app.dicom.options import OPTIONS
from monai_anon_app.dicom.pixel_change import of_command
from monai_anon_app.inference import Anonymizer, seed_for
from monai_anon_app.server.datastore import image_path
from monai_anon_app.server.jobs import (
    Job,
    JobResult,
    base_seed,
    deid_options,
    deliver,
    describe_input,
    export_sources,
    identity_key,
    load_source,
    store_for,
    stow,
)
from monai_anon_app.server.model_store import ModelStore
from monai_anon_app.server.params import MAX_SEED, Option, parse_options
from monai_anon_app.server.request_errors import RequestError, as_request_error
from monai_anon_app.server.settings import Runtime
from monai_anon_app.server.uploads import UPLOAD_NAME, InputImage, check_id, load_input

__all__ = ["INFER_TASKS", "AnonymizeTask", "CounterfactualTask", "ExplainTask", "ExportTask", "ModelInferTask",
           "find_task", "in_process_request", "run_job"]

SEED = Option("seed", int, None, "random seed (null = random; the seed used is reported back)", minimum=0,
              maximum=MAX_SEED, nullable=True)
IDENTITY_SEED = Option("seed", int, None, "seed of the synthetic identities (null = random; reported back): a DICOM "
                       "image gets seed_for(seed, its patient's keyed identity key), one identity per patient, so "
                       "anonymize and export agree", minimum=0, maximum=MAX_SEED, nullable=True)
CANDIDATES_OPTION = Option("candidates", int, CANDIDATES, "synthetic identities drawn; the most typical one that "
                           "passes the novelty check is used", minimum=1, maximum=256)
MAX_RESULT_BYTES = 2 * 2**30


def mode_option(default: str) -> Option:
    return Option("mode", str, default, "; ".join(f"{m}: {MODE_HELP[m]}" for m in MODES), choices=MODES)


class ModelInferTask(InferTask):
    """An infer task backed by the served model folder."""

    name: ClassVar[str]
    summary: ClassVar[str]
    options: ClassVar[tuple[Option, ...]]
    result: ClassVar[str] = "float32 NIfTI in the input's geometry and intensity units"
    #: name of the result file in the job's output folder
    result_name: ClassVar[str]

    def __init__(self, store: ModelStore, runtime: Runtime, stow_url: str | None = None) -> None:
        super().__init__(type=InferType.OTHERS, labels=[], dimension=2, description=self.summary,
                         config={o.name: o.default for o in self.options})
        self.store, self.runtime, self.stow_url = store, runtime, stow_url

    def is_valid(self) -> bool:
        return True  # listed even before a model exists; requests then answer 503 with the reason

    def classes(self) -> list[str]:
        cfg = self.store.config()
        return list(cfg.classes) if cfg is not None else []

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["labels"] = self.classes()
        info["options"] = {o.name: o.describe() for o in self.options}
        info["result"] = self.result
        info["model"] = self.store.describe()
        return info

    def parse(self, params: dict[str, Any]) -> dict[str, Any]:
        """Options from a request's ``params`` (unknown keys and bad values: :class:`RequestError` 422)."""
        return parse_options(self.options, params)

    def job(self, input_path: str, options: dict[str, Any], out_dir: str, reference: str | None = None,
            cacheable: bool = False, input_name: str | None = None, extra_inputs: list[str] | None = None) -> Job:
        rt = self.runtime
        return Job(task=self.name, input=input_path, options=options, out_dir=out_dir,
                   model_base=str(rt.model_base), publish_root=str(rt.publish_root), reference=reference,
                   stow_url=self.stow_url, key_file=str(rt.key_file), max_side=rt.max_side, cacheable=cacheable,
                   input_name=input_name, extra_inputs=list(extra_inputs or []), max_unzip_bytes=rt.max_unzip_bytes)

    @classmethod
    def run(cls, job: Job) -> JobResult:
        """Do ``job`` on files, in this process: read the input, :meth:`compute`, deliver the images."""
        store = store_for(job.model_base, job.publish_root)
        src = load_source(job)
        images, info = cls.compute(job, src, store.anonymizer())
        info["model"] = store.name()
        info["input"] = describe_input(src)
        return deliver(job, Path(job.out_dir) / cls.result_name, src, images, info)

    @classmethod
    def compute(cls, job: Job, src: InputImage, anonymizer: Anonymizer) -> tuple[list[np.ndarray], dict[str, Any]]:
        """The task's images (in ``src``'s pixel grid) and its JSON for one input."""
        raise NotImplementedError

    def __call__(self, request: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """In-process run for MONAI Label's own ``app.infer``: ``request["image"]`` is a local path and the
        options sit at the top level of ``request`` (MONAI Label merges params there)."""
        names = {o.name for o in self.options}
        options = self.parse({k: v for k, v in request.items() if k in names})
        if options.get("reference"):
            raise RequestError(422, "a reference image id is resolved by the REST endpoint only")
        out_dir = self.runtime.request_dir()
        image = str(request["image"])
        try:
            path, info = self.run(self.job(image, options, str(out_dir), input_name=_upload_name(image)))
            if path is not None:  # MONAI Label removes the result file, not its folder: move it out
                moved = out_dir.parent / f"{out_dir.name}-{Path(path).name}"
                os.replace(path, moved)
                path = str(moved)
            return path, info
        except Exception as exc:
            mapped = as_request_error(exc)
            raise (mapped or exc) from None
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)


def _monai_label_upload(path: str) -> bool:
    """MONAI Label's own ``/infer`` endpoint stores an upload as a ``tempfile.NamedTemporaryFile`` in the
    system temp folder (a name the client never saw) and passes that path as the image."""
    p = Path(path)
    return p.parent == Path(tempfile.gettempdir()) and p.name.startswith("tmp")


def _upload_name(path: str) -> str | None:
    """How messages name the input of an in-process request (None: by its file name)."""
    return UPLOAD_NAME if _monai_label_upload(path) else None


def find_task(tasks: dict[str, Any], name: str) -> Any:
    """The infer task ``name``; 404 with the list of models when there is none."""
    task = tasks.get(name)
    if task is None:
        raise RequestError(404, f"unknown model {name[:80]!r}; the models are {', '.join(tasks) or 'none'}")
    return task


def in_process_request(tasks: dict[str, Any], request: dict[str, Any], datastore: Any) -> dict[str, Any]:
    """``request`` of MONAI Label's own in-process inference (its ``/infer`` endpoint when the server was not
    started with ``monai-anon serve``, batch inference) checked as ``monai-anon serve`` checks it, with the
    image id resolved to its datastore file. MONAI Label itself would take *any* existing server path as an
    image, look up an unknown id as ``""`` and answer an unknown model with a bare 500: here an unknown
    model or image is 404, an id with path components 400; its own temporary uploads and session files pass."""
    find_task(tasks, str(request.get("model") or ""))
    image = request.get("image")
    if isinstance(image, str) and "session" not in request and not _monai_label_upload(image):
        return {**request, "image": image_path(datastore, check_id(image))}
    return request


class AnonymizeTask(ModelInferTask):
    name = "anonymize"
    summary = "Replace the patient's identity with a synthetic one; the finding is kept"
    result_name = "anonymized.nii"
    options = (IDENTITY_SEED, CANDIDATES_OPTION, mode_option(ANONYMIZE_MODE))

    @classmethod
    def compute(cls, job: Job, src: InputImage, anonymizer: Anonymizer) -> tuple[list[np.ndarray], dict[str, Any]]:
        opts = job.options
        seed = base_seed(opts)
        identity_seed = seed_for(seed, identity_key(job, src))  # as the export of this image will draw it
        res = anonymizer.anonymize(src.image.pixels, seed=identity_seed, candidates=opts["candidates"],
                                   mode=opts["mode"])
        return [res.image], {**res.info(), "seed": seed, "identity_seed": identity_seed,
                             "candidates": opts["candidates"]}


class CounterfactualTask(ModelInferTask):
    name = "counterfactual"
    summary = "Show the image as it would look with another finding; identity and acquisition are kept"
    result_name = "counterfactual.nii"
    options = (
        Option("target", str, None, "class to move towards (one of the model's classes)", nullable=True),
        Option("reference", str, None, "datastore image id whose finding to take instead of a class",
               nullable=True),
        mode_option(COUNTERFACTUAL_MODE),
    )

    @classmethod
    def compute(cls, job: Job, src: InputImage, anonymizer: Anonymizer) -> tuple[list[np.ndarray], dict[str, Any]]:
        opts = job.options
        reference = None
        if job.reference is not None:
            reference = load_input(job.reference, job.max_side, scratch=job.out_dir).image.pixels
        if opts["target"] is None and reference is None:
            raise RequestError(422, "give a target class or a reference image id")
        res = anonymizer.counterfactual(src.image.pixels, target=opts["target"], reference=reference,
                                        mode=opts["mode"])
        return [res.image], res.info()


class ExplainTask(ModelInferTask):
    name = "explain"
    summary = "Predicted finding and the k most similar training cases, each shown with a synthetic identity"
    result = "float32 NIfTI volume, one slice per case in the order of the JSON 'cases' list"
    result_name = "cases.nii"
    options = (
        Option("k", int, 3, "number of similar training cases", minimum=1, maximum=64),
        SEED,
    )

    @classmethod
    def compute(cls, job: Job, src: InputImage, anonymizer: Anonymizer) -> tuple[list[np.ndarray], dict[str, Any]]:
        k, pixels = job.options["k"], src.image.pixels
        size = k * pixels.size * 4
        if size > MAX_RESULT_BYTES:
            raise RequestError(413, f"{k} cases of {pixels.shape[0]}×{pixels.shape[1]} pixels would make a "
                                    f"{size / 2**30:.1f} GiB result; ask for fewer cases or send a smaller image")
        res = anonymizer.explain(pixels, k=k, seed=job.options["seed"])
        return [c.image for c in res.cases], res.info()


class ExportTask(ModelInferTask):
    name = "export"
    summary = "The anonymized DICOM study (pixels and PS3.15 headers) as a zip, optionally stored back by STOW-RS"
    result = "application/zip of DICOM files <StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm"
    result_name = "anonymized-study.zip"
    options = (
        IDENTITY_SEED, CANDIDATES_OPTION, mode_option(ANONYMIZE_MODE),
        Option("headers_only", bool, False, "de-identify headers only; pixels are kept and not claimed clean"),
        *(Option(name, bool, False, f"PS3.15 option: {option.help}") for name, option in OPTIONS.items()),
        Option("stow", bool, False, "also store the result on the DICOMweb datastore (STOW-RS); a failure is "
               "reported in the JSON 'stow' and the zip is still returned"),
    )

    def classes(self) -> list[str]:
        return []

    def parse(self, params: dict[str, Any]) -> dict[str, Any]:
        options = super().parse(params)
        if options["stow"] and not self.stow_url:
            raise RequestError(422, "stow needs a DICOMweb datastore (start the server with --studies URL)")
        return options

    @classmethod
    def run(cls, job: Job) -> JobResult:
        """Anonymize every DICOM file of the job's inputs into one zip (see :func:`export_study_zip`)."""
        store = store_for(job.model_base, job.publish_root)
        out = Path(job.out_dir) / cls.result_name
        opts = job.options  # parsed by parse(): stow only with a DICOMweb datastore
        files, not_dicom = export_sources(job)
        deid = deid_options(job, **{k: bool(opts.get(k, False)) for k in OPTIONS})
        headers_only = bool(opts["headers_only"])
        seed = base_seed(opts)
        pixel_fn = None
        if not headers_only:
            anonymizer = store.anonymizer()

            def pixel_fn(pixels: np.ndarray, key: str) -> np.ndarray:  # the anonymize task's rule for this image
                return anonymizer.anonymize(pixels, seed=seed_for(seed, key), candidates=opts["candidates"],
                                            mode=opts["mode"]).image

        summary = export_study_zip(files, out, deid, pixel_fn, of_command("anonymize", opts["mode"],
                                                                           headers_only=headers_only))
        summary.skipped[:0] = not_dicom
        info: dict[str, Any] = {
            "files": summary.files, "study_uids": summary.study_uids, "seed": None if headers_only else seed,
            "headers_only": headers_only, **({} if headers_only else {"candidates": opts["candidates"],
                                                                       "mode": opts["mode"]}),
            "summary": {"done": summary.done, **{k: [{"file": n, "reason": r} for n, r in getattr(summary, k)]
                                                for k in ("refused", "skipped", "failed")}},
            "model_checksum": None if headers_only else store.checksum(), "model": store.name(),
        }
        if opts.get("stow"):
            info["stow"] = stow(out, job.stow_url)
        return str(out), info


INFER_TASKS: tuple[type[ModelInferTask], ...] = (AnonymizeTask, CounterfactualTask, ExplainTask, ExportTask)


def run_job(job: Job) -> JobResult:
    """Run ``job`` with the task it names (in an inference worker process)."""
    for cls in INFER_TASKS:
        if cls.name == job.task:
            return cls.run(job)
    raise RequestError(404, f"unknown task {job.task!r}; the tasks are {', '.join(c.name for c in INFER_TASKS)}")
