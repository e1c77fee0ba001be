"""The infer tasks as MONAI Label sees them: names, options and classes for ``GET /info/``.

The REST endpoint (:mod:`monai_anon_app.tasks.asgi`) runs them in inference worker processes; calling
a task object (MONAI Label's ``app.infer``, batch inference, ``monailabel.interfaces.utils.app``) runs the
same :func:`~monai_anon_app.tasks.engine.run_job` in-process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from .datastore import image_path
from .engine import DEID_FLAGS, Job, run_job
from .errors import RequestError, as_request_error
from .inputs import UPLOAD_NAME, check_id
from .models import ModelStore
from .options import MAX_SEED, Option, parse_options
from .runtime import Runtime

__all__ = ["INFER_TASKS", "AnonymizeTask", "CounterfactualTask", "ExplainTask", "ExportTask", "ModelInferTask",
           "find_task", "in_process_request"]

SEED = Option("seed", int, None, "random seed (null = random; the seed used is reported back)", minimum=0,
              maximum=MAX_SEED, nullable=True)
IDENTITY_SEED = Option("seed", int, None, "seed of the synthetic identities (null = random; reported back): a DICOM "
                       "image gets seed_for(seed, its patient's keyed identity key), one identity per patient, so "
                       "anonymize and export agree", minimum=0, maximum=MAX_SEED, nullable=True)
CANDIDATES = Option("candidates", int, 8, "synthetic identities drawn; the one farthest from the patient is used",
                    minimum=1, maximum=256)
ANONYMIZE_MODE = Option("mode", str, "full", "full: regenerate the whole image; residual: add the model's change to "
                        "the original (keeps fine detail, including identifying detail)", choices=("full", "residual"))


class ModelInferTask(InferTask):
    """An infer task backed by the served model folder."""

    name: ClassVar[str]
    summary: ClassVar[str]
    options: ClassVar[tuple[Option, ...]]
    result: ClassVar[str] = "float32 NIfTI in the input's geometry and intensity units"

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
            path, info = run_job(self.job(image, options, str(out_dir), input_name=_upload_name(image)))
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
    options = (IDENTITY_SEED, CANDIDATES, ANONYMIZE_MODE)


class CounterfactualTask(ModelInferTask):
    name = "counterfactual"
    summary = "Show the image as it would look with another finding; identity and acquisition are kept"
    options = (
        Option("target", str, None, "class to move towards (one of the model's classes)", nullable=True),
        Option("reference", str, None, "datastore image id whose finding to take instead of a class",
               nullable=True),
        Option("mode", str, "residual", "residual: add the model's change to the original; full: regenerate",
               choices=("residual", "full")),
    )


class ExplainTask(ModelInferTask):
    name = "explain"
    summary = "Predicted finding and the k most similar training cases, each shown with a synthetic identity"
    result = "float32 NIfTI volume, one slice per case in the order of the JSON 'cases' list"
    options = (
        Option("k", int, 3, "number of similar training cases", minimum=1, maximum=64),
        SEED,
    )


class ExportTask(ModelInferTask):
    name = "export"
    summary = "The anonymized DICOM study (pixels and PS3.15 headers) as a zip, optionally stored back by STOW-RS"
    result = "application/zip of DICOM files <StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm"
    options = (
        IDENTITY_SEED, CANDIDATES, ANONYMIZE_MODE,
        Option("headers_only", bool, False, "de-identify headers only; pixels are kept and not claimed clean"),
        *(Option(flag, bool, False, f"PS3.15 option: {flag.replace('_', ' ')}") for flag in DEID_FLAGS),
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


INFER_TASKS: tuple[type[ModelInferTask], ...] = (AnonymizeTask, CounterfactualTask, ExplainTask, ExportTask)
