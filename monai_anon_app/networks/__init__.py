"""Networks of the disentanglement model, built from MONAI blocks with ``spatial_dims`` a parameter."""

from monai_anon_app.networks.disentangler import (
    DisentanglerConfig,
    Encoder,
    Features,
    Generator,
    IdentityProjector,
    PoseHead,
    Rendering,
    split_medical,
)
from monai_anon_app.networks.distances import cosine_distance, nearest_distance
from monai_anon_app.networks.heads import (
    CosineClassifier,
    GridClassifier,
    IdentityVAE,
    MaskClassifier,
    MLPHead,
    make_discriminator,
)
from monai_anon_app.networks.model import DisentanglementModel

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
    "MLPHead",
    "MaskClassifier",
    "PoseHead",
    "Rendering",
    "cosine_distance",
    "make_discriminator",
    "nearest_distance",
    "split_medical",
]
