"""Networks of the disentanglement model, built from MONAI blocks with ``spatial_dims`` a parameter."""

from .disentangler import DisentanglerConfig, Encoder, Features, Generator, IdentityProjector
from .heads import CosineClassifier, IdentityVAE, MedicalHead, make_discriminator
from .model import DisentanglementModel

__all__ = [
    "CosineClassifier",
    "DisentanglementModel",
    "DisentanglerConfig",
    "Encoder",
    "Features",
    "Generator",
    "IdentityProjector",
    "IdentityVAE",
    "MedicalHead",
    "make_discriminator",
]
