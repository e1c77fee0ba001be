"""Inference on arrays with a trained model folder: encode, anonymize, counterfactual, explain."""

from .anonymizer import (
    MAX_SIDE,
    Anonymizer,
    AnonymizeResult,
    Case,
    CounterfactualResult,
    ExplainResult,
    ModelError,
    Prediction,
)
from .model_dir import CaseBank, checksum
from .registry import DEFAULT_MODEL, resolve_model

__all__ = [
    "DEFAULT_MODEL",
    "MAX_SIDE",
    "AnonymizeResult",
    "Anonymizer",
    "Case",
    "CaseBank",
    "CounterfactualResult",
    "ExplainResult",
    "ModelError",
    "Prediction",
    "checksum",
    "resolve_model",
]
