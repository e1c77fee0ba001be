"""Inference on arrays: encode, anonymize, counterfactual and explain with a trained model folder.

Every public method takes a 2D image ``(H, W)`` in its own units (any size up to
:data:`MAX_SIDE`, finite values) and returns images of the same shape and units (float32). Batched
``*_model`` methods work directly in model space on ``(B, 1, S, S)`` tensors in ``[0, 1]`` (used by the
evaluation).

Two rendering modes:

* ``"full"`` — regenerate the whole image from the (edited) feature vectors, then resize to the input;
* ``"residual"`` — add the model's *change* (edited minus plain reconstruction), resized, to the
  original pixels: full-resolution detail is kept. For anonymization this also keeps any identifying
  fine detail of the original, so ``"full"`` is the default there; for counterfactuals ``"residual"``
  is the default. A counterfactual also takes the model's image instead of the original inside the
  source's own finding (:func:`redraw_weight`): otherwise whatever part of that finding the
  reconstruction missed would survive its removal.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from monai_anon_app.data.transforms import ModelInput, from_model, to_model
from monai_anon_app.defaults import ANONYMIZE_MODE, CANDIDATES, COUNTERFACTUAL_MODE, MODES
from monai_anon_app.errors import InputError, ModelError
from monai_anon_app.imageio.images import validate_pixels
from monai_anon_app.modelfolder.config import TrainConfig
from monai_anon_app.modelfolder.folder import CaseBank, load_model
from monai_anon_app.networks import (
    DisentanglementModel,
    Features,
    IdentityVAE,
    Rendering,
    cosine_distance,
    nearest_distance,
)

__all__ = [
    "MAX_SIDE",
    "AnonymizeResult",
    "Anonymizer",
    "Case",
    "CounterfactualResult",
    "ExplainResult",
    "ModelError",
    "Prediction",
    "redraw_weight",
]

MAX_SIDE = 8192


def redraw_weight(finding_mask: torch.Tensor) -> torch.Tensor:
    """``(B, 1, S, S)`` drawn finding mask of the source -> weight in ``[0, 1]`` of the model's image against
    the original's in a residual counterfactual: the mask dilated by one pixel, at full weight where it is
    0.5 or more. (Shipped model, 150 patients × 2 visits disjoint from the evaluation's test cohort: validity
    0.77 without it, 0.85 with it; larger regions or weights gained no more than the sampling error.)"""
    return (2 * F.max_pool2d(finding_mask, 3, 1, 1)).clamp(0, 1)


@dataclass
class Prediction:
    """The medical head's finding with its class probabilities."""

    label: str
    probabilities: dict[str, float]

    def to_dict(self) -> dict:
        return {"label": self.label, "probabilities": self.probabilities}


@dataclass
class AnonymizeResult:
    image: np.ndarray
    seed: int
    identity_distance: float
    source_distance: float
    prediction_before: Prediction
    prediction_after: Prediction
    mode: str
    model_checksum: str

    def info(self) -> dict:
        """JSON-ready details (everything but the image)."""
        return {"seed": self.seed, "identity_distance": self.identity_distance,
                "source_identity_distance": self.source_distance,
                "prediction_before": self.prediction_before.to_dict(),
                "prediction_after": self.prediction_after.to_dict(), "mode": self.mode,
                "model_checksum": self.model_checksum}


@dataclass
class CounterfactualResult:
    image: np.ndarray
    target: str
    prediction_before: Prediction
    prediction_after: Prediction
    mode: str
    model_checksum: str

    def info(self) -> dict:
        return {"target": self.target, "prediction_before": self.prediction_before.to_dict(),
                "prediction_after": self.prediction_after.to_dict(), "mode": self.mode,
                "model_checksum": self.model_checksum}


@dataclass
class Case:
    """A training case shown as evidence: rendered with a synthetic identity, never its own."""

    image: np.ndarray
    finding: str
    distance: float
    seed: int
    #: index of the case in the model's bank (for the evaluation; never sent to clients)
    bank_index: int = -1


@dataclass
class ExplainResult:
    prediction: Prediction
    cases: list[Case] = field(default_factory=list)
    model_checksum: str = ""

    def info(self) -> dict:
        return {"prediction": self.prediction.to_dict(), "model_checksum": self.model_checksum,
                "cases": [{"finding": c.finding, "distance": c.distance, "seed": c.seed} for c in self.cases]}


class Anonymizer:
    """A loaded model folder (see :mod:`monai_anon_app.modelfolder.folder`)."""

    def __init__(self, model: DisentanglementModel, vae: IdentityVAE, bank: CaseBank, calibration: dict,
                 config: TrainConfig, model_checksum: str = "") -> None:
        self.model, self.vae, self.bank = model.eval(), vae.eval(), bank
        self.calibration, self.config, self.checksum = calibration, config, model_checksum
        self.threshold = float(calibration["threshold"])
        med = bank.medical
        # per-dimension scale for medical distances, floored at the mean spread: finding-mask cells that are
        # empty in every training case must not turn a faint value in a query into a huge distance
        std = med.std(0)
        self._med_mean, self._med_std = med.mean(0), std.clamp_min(max(float(std.mean()), 1e-6))

    # -- loading -----------------------------------------------------------------------------------
    @classmethod
    def load(cls, model_dir: str | Path) -> Anonymizer:
        """Load a model folder; raise :class:`ModelError` naming what is missing."""
        m = load_model(model_dir)
        return cls(m.model, m.vae, m.bank, m.calibration, m.config, m.checksum)

    @property
    def image_size(self) -> int:
        return self.config.model.image_size

    @property
    def classes(self) -> list[str]:
        return list(self.config.classes)

    # -- model space (batched) -------------------------------------------------------------------
    @torch.no_grad()
    def encode_model(self, x: torch.Tensor) -> Features:
        return self.model.encoder(x)

    @torch.no_grad()
    def decode_model(self, f: Features) -> torch.Tensor:
        return self.model.generator(f).clamp(0, 1)

    @torch.no_grad()
    def render_model(self, f: Features) -> Rendering:
        """What the generator draws for ``f``: the image (not clamped), the finding layer and its masks."""
        return self.model.generator.render(f)

    @torch.no_grad()
    def predict_features(self, f: Features) -> torch.Tensor:
        """``(B, n_classes)`` probabilities from the medical head."""
        return self.model.medical_head(f.medical).softmax(1)

    @torch.no_grad()
    def synthetic_identity(self, seed: int, source: torch.Tensor | None = None,
                           candidates: int = CANDIDATES, rounds: int = 32) -> tuple[torch.Tensor, float, float]:
        """A synthetic identity vector ``(I,)`` for ``seed`` with its embedding distance to the nearest
        training patient and to ``source`` (the source's identity *embedding* ``(E,)``); candidates
        nearer than the calibrated threshold to either are rejected, and among those accepted the most
        typical (smallest latent radius) is taken: far-out samples decode to implausible anatomy. Each round
        that accepts none draws from a wider Gaussian (temperature ``1 + 0.25 × round``)."""
        if candidates < 1:
            raise ValueError("candidates must be at least 1")
        g = torch.Generator().manual_seed(int(seed))
        src = source[None] if source is not None else None
        for r in range(rounds):
            cand, radius = self.vae.sample_with_typicality(candidates, g, temperature=1.0 + 0.25 * r)
            emb = self.model.identity_embedding(cand)
            d_train = nearest_distance(emb, self.bank.identities)
            d_src = cosine_distance(emb, src).squeeze(1) if src is not None else d_train
            ok = (d_train >= self.threshold) & (d_src >= self.threshold)
            if ok.any():
                i = int(torch.where(ok, radius, torch.full_like(radius, float("inf"))).argmin())
                return cand[i], float(d_train[i]), float(d_src[i])
        raise ModelError("no synthetic identity passed the novelty check; the identity generator needs retraining")

    @torch.no_grad()
    def anonymize_model(self, x: torch.Tensor, seeds: list[int],
                        candidates: int = CANDIDATES) -> tuple[torch.Tensor, list]:
        """``(B, 1, S, S)`` -> anonymized ``(B, 1, S, S)`` (full regeneration) and per-image distances."""
        f = self.encode_model(x)
        emb = self.model.identity_embedding(f.identity)
        ids, dists = [], []
        for i, s in enumerate(seeds):
            ident, d_train, d_src = self.synthetic_identity(s, emb[i], candidates)
            ids.append(ident)
            dists.append((d_train, d_src))
        return self.decode_model(f.replace(identity=torch.stack(ids))), dists

    @torch.no_grad()
    def target_medical(self, f: Features, target: str, typical_fraction: float = 0.1) -> torch.Tensor:
        """For each image, a medical vector of class ``target``: of the training cases of that class, the most
        confidently classified ``typical_fraction``, and among those the nearest to the image's own.

        (The nearest case of the class overall is the faintest finding, nearest to "none": a counterfactual
        made with it often does not show its class.)"""
        t = self._class_index(target)
        pool = (self.bank.finding == t).nonzero()[:, 0]
        if len(pool) == 0:
            raise ModelError(f"the model's case bank holds no training case of class {target!r}")
        keep = max(1, int(typical_fraction * len(pool)))
        cand = self.bank.medical[pool[self.bank.confidence[pool].topk(keep).indices]]
        d = torch.cdist((f.medical - self._med_mean) / self._med_std, (cand - self._med_mean) / self._med_std)
        return cand[d.argmin(1)]

    @torch.no_grad()
    def counterfactual_model(self, x: torch.Tensor, target: str | None = None, residual: bool = True,
                             reference: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, 1, S, S)`` -> counterfactual in model space: towards class ``target`` (the nearest confident
        training case's medical vector) or with the finding of ``reference (B, 1, S, S)`` images."""
        if (target is None) == (reference is None):
            raise InputError("give exactly one of a target class or reference images")
        f = self.encode_model(x)
        medical = self.target_medical(f, target) if reference is None else self.encode_model(reference).medical
        edited = self.decode_model(f.replace(medical=medical))
        if not residual:
            return edited
        source = self.render_model(f)
        reconstruction = source.image.clamp(0, 1)
        redrawn = redraw_weight(source.mask) * (x - reconstruction)
        return (x + edited - reconstruction - redrawn).clamp(0, 1)

    # -- arrays in their own units ----------------------------------------------------------------
    def _prepare(self, pixels: np.ndarray, name: str = "image") -> ModelInput:
        arr = validate_pixels(pixels, name)
        if max(arr.shape) > MAX_SIDE:
            raise InputError(f"{name} is {arr.shape[0]}×{arr.shape[1]} pixels; the largest side accepted is "
                             f"{MAX_SIDE}")
        return to_model(arr, self.image_size)

    def _class_index(self, label: str) -> int:
        if label not in self.classes:
            raise InputError(f"unknown class {label!r}; the model knows {', '.join(self.classes)}")
        return self.classes.index(label)

    def _prediction(self, prob: torch.Tensor) -> Prediction:
        p = prob.squeeze(0)
        return Prediction(self.classes[int(p.argmax())], {c: round(float(v), 6) for c, v in zip(self.classes, p)})

    def _render(self, mi: ModelInput, pixels: np.ndarray, f: Features, edited: Features, mode: str,
                redraw_finding: bool = False) -> np.ndarray:
        """``edited`` in ``mode``, in ``pixels``' size and units; with ``redraw_finding`` (a counterfactual) the
        residual mode takes the model's image inside the source's finding (see the module docstring)."""
        if mode not in MODES:
            raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        out = self.decode_model(edited)
        if mode == "full":
            return mi.restore(out[0])
        source = self.render_model(f)
        reconstruction = source.image.clamp(0, 1)[0]
        scale = (mi.high - mi.low) or 1.0
        original = np.asarray(pixels, np.float32)
        image = original + from_model(out[0] - reconstruction, 0.0, scale, mi.shape)
        if redraw_finding:
            weight = from_model(redraw_weight(source.mask)[0], 0.0, 1.0, mi.shape)
            image = image - weight * (original - mi.restore(reconstruction))
        return image.astype(np.float32)

    def encode(self, pixels: np.ndarray) -> Features:
        """Feature vectors of one image: each tensor ``(1, ·)``."""
        return self.encode_model(self._prepare(pixels).tensor[None])

    def predict(self, pixels: np.ndarray) -> Prediction:
        return self._prediction(self.predict_features(self.encode(pixels)))

    def reconstruct(self, pixels: np.ndarray) -> np.ndarray:
        mi = self._prepare(pixels)
        return mi.restore(self.decode_model(self.encode_model(mi.tensor[None]))[0])

    def anonymize(self, pixels: np.ndarray, seed: int | None = None, candidates: int = CANDIDATES,
                  mode: str = ANONYMIZE_MODE) -> AnonymizeResult:
        """Replace the identity vector with a synthetic one (reproducible for a given ``seed``)."""
        mi = self._prepare(pixels)
        seed = secrets.randbelow(2**31) if seed is None else int(seed)
        f = self.encode_model(mi.tensor[None])
        source = self.model.identity_embedding(f.identity)[0]
        ident, d_train, d_src = self.synthetic_identity(seed, source, candidates)
        edited = f.replace(identity=ident[None])
        image = self._render(mi, pixels, f, edited, mode)
        after = self.predict_features(self.encode_model(self._prepare(image).tensor[None]))
        return AnonymizeResult(image, seed, d_train, d_src, self._prediction(self.predict_features(f)),
                               self._prediction(after), mode, self.checksum)

    def counterfactual(self, pixels: np.ndarray, target: str | None = None, reference: np.ndarray | None = None,
                       mode: str = COUNTERFACTUAL_MODE) -> CounterfactualResult:
        """Swap in the medical vector of class ``target`` (nearest confident training case) or of ``reference``."""
        if (target is None) == (reference is None):
            raise InputError("give exactly one of a target class or a reference image")
        mi = self._prepare(pixels)
        f = self.encode_model(mi.tensor[None])
        if reference is not None:
            medical = self.encode(reference).medical
            target = self._prediction(self.predict_features(Features(medical, f.identity, f.other))).label
        else:
            medical = self.target_medical(f, target)
        image = self._render(mi, pixels, f, f.replace(medical=medical), mode, redraw_finding=True)
        after = self.predict_features(self.encode_model(self._prepare(image).tensor[None]))
        return CounterfactualResult(image, target, self._prediction(self.predict_features(f)),
                                    self._prediction(after), mode, self.checksum)

    def explain(self, pixels: np.ndarray, k: int = 3, seed: int | None = None) -> ExplainResult:
        """Predicted finding and the ``k`` training cases nearest in medical space, rendered anonymized."""
        if k < 1 or k > len(self.bank.medical):
            raise InputError(f"k must be between 1 and {len(self.bank.medical)}")
        mi = self._prepare(pixels)
        seed = secrets.randbelow(2**31) if seed is None else int(seed)
        f = self.encode_model(mi.tensor[None])
        z = (f.medical - self._med_mean) / self._med_std
        d = torch.cdist(z, (self.bank.medical - self._med_mean) / self._med_std)[0]
        dist, idx = d.topk(k, largest=False)
        cases = []
        for j, (i, dd) in enumerate(zip(idx.tolist(), dist.tolist())):
            case_seed = seed + j
            ident, _, _ = self.synthetic_identity(case_seed, self.bank.identities[self.bank.patient[i]])
            img = self.decode_model(Features(self.bank.medical[i: i + 1], ident[None], self.bank.other[i: i + 1]))
            cases.append(Case(mi.restore(img[0]), self.classes[int(self.bank.finding[i])], float(dd), case_seed, i))
        return ExplainResult(self._prediction(self.predict_features(f)), cases, self.checksum)
