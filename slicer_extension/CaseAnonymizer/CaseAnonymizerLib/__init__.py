"""Case Anonymizer library: server client, background jobs, settings, parameters and helpers.

Nothing here imports Qt, MRML, torch or monai: it runs inside Slicer's Python and in plain Python.
"""

from .client import InferResponse, ModelInfo, ServerClient, ServerInfo, Upload, is_loopback, normalize_server_url
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
from .helpers import (
    ExportPlan,
    dicom_upload,
    dicom_zip_upload,
    difference_window,
    extract_zip,
    new_pseudonym,
    new_seed,
    summarize,
)
from .jobs import Job, Progress
from .login import Token, TokenStore
from .parameters import BINDINGS, DEID_OPTIONS, PARAMETERS, Binding, Parameters
from .settings import ConsentStore, UrlHistory
from .views import COMPARE_LAYOUT_ID, EXPLAIN_LAYOUT_ID, VIEW_GROUP, VIEWS, layout_xml

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
