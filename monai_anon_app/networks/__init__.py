"""Networks of the disentanglement model, built from MONAI blocks with ``spatial_dims`` a parameter."""

from .disentangler import (
    DisentanglerConfig,
    Encoder,
    Features,
    Generator,
    IdentityProjector,
    PoseHead,
    Rendering,
    split_medical,
)
from .heads import CosineClassifier, GridClassifier, IdentityVAE, MaskClassifier, MedicalHead, make_discriminator
from .model import DisentanglementModel

__all__ = [
    "CosineClassifier",
    "DisentanglementModel",
    "DisentanglerConfig",
    "Encoder",
    "Features",
    "Generator",
    "GridClassifier",
    "IdentityProjector",
    "IdentityVAE",
    "MaskClassifier",
    "MedicalHead",
    "PoseHead",
    "Rendering",
    "make_discriminator",
    "split_medical",
]
