"""Case Anonymizer library: the module's Logic and everything it is built from, none of it Qt.

This package root re-exports the plain-Python parts (server client, background jobs, settings, parameters,
views, export plans, summaries, errors): they import neither Qt nor MRML and run in plain Python too.
:mod:`.logic` (the Logic) and :mod:`.window_level` work on MRML and are imported from their modules.

Naming: modules, functions and plain classes' methods are snake_case; classes that extend Slicer's own
(the Logic, the window/level observer) follow Slicer's camelCase, as their base classes do.
"""

from .client import InferResponse, ModelInfo, ServerClient, ServerInfo, Upload
from .dicom_files import dicom_upload, dicom_zip_upload, extract_zip
from .errors import (
    CancelledError,
    CaseAnonymizerError,
    CertificateError,
    ConsentRequiredError,
    ImageRefusedError,
    InputError,
    LoginRequiredError,
    ModelNotFoundError,
    NotAServerError,
    ServerFailedError,
    ServerResponseError,
    ServerTimeoutError,
    ServerUnreachableError,
    ServerUrlError,
    describe,
)
from .export_plan import ExportPlan
from .identities import new_pseudonym, new_seed
from .jobs import Job, Progress
from .login import Token, TokenStore
from .operations import Operation, Outcome
from .parameters import BINDINGS, DEID_OPTIONS, PARAMETERS, Binding, Parameters
from .settings import ConsentStore, UrlHistory
from .summaries import summarize
from .urls import is_loopback, normalize_server_url
from .views import COMPARE_LAYOUT_ID, EXPLAIN_LAYOUT_ID, VIEW_GROUP, VIEWS, difference_window, layout_xml

__all__ = [
    "BINDINGS",
    "COMPARE_LAYOUT_ID",
    "DEID_OPTIONS",
    "EXPLAIN_LAYOUT_ID",
    "PARAMETERS",
    "VIEWS",
    "VIEW_GROUP",
    "Binding",
    "CancelledError",
    "CaseAnonymizerError",
    "CertificateError",
    "ConsentRequiredError",
    "ConsentStore",
    "ExportPlan",
    "ImageRefusedError",
    "InferResponse",
    "InputError",
    "Job",
    "LoginRequiredError",
    "ModelInfo",
    "ModelNotFoundError",
    "NotAServerError",
    "Operation",
    "Outcome",
    "Parameters",
    "Progress",
    "ServerClient",
    "ServerFailedError",
    "ServerInfo",
    "ServerResponseError",
    "ServerTimeoutError",
    "ServerUnreachableError",
    "ServerUrlError",
    "Token",
    "TokenStore",
    "Upload",
    "UrlHistory",
    "describe",
    "dicom_upload",
    "dicom_zip_upload",
    "difference_window",
    "extract_zip",
    "is_loopback",
    "layout_xml",
    "new_pseudonym",
    "new_seed",
    "normalize_server_url",
    "summarize",
]
