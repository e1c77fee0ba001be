"""Inference on arrays with a trained model folder: encode, anonymize, counterfactual, explain."""

from monai_anon_app.inference.anonymizer import (
    MAX_SIDE,
    Anonymizer,
    AnonymizeResult,
    Case,
    CounterfactualResult,
    ExplainResult,
    Prediction,
)
from monai_anon_app.inference.seeds import seed_for

__all__ = [
    "MAX_SIDE",
    "AnonymizeResult",
    "Anonymizer",
    "Case",
    "CounterfactualResult",
    "ExplainResult",
    "Prediction",
    "seed_for",
]
