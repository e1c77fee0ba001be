"""Deterministic chest-radiograph-like phantoms with known identity, finding and nuisance.

A phantom image is rendered from three independent parameter sets:

* :class:`Identity` — fixed per patient: thorax outline, lung fields, ribs, heart, spine and a
  per-patient lung texture;
* :class:`Finding` — per image: ``normal``, ``nodule`` (a round opacity inside a lung) or ``effusion``
  (a basal opacity with a meniscus), placed in lung-relative coordinates so it transfers across
  patients;
* :class:`Nuisance` — per image: translation, rotation, scale, gamma, contrast, brightness, noise.

Because the renderer is a pure function of these parameters it also gives the *oracles* the evaluation
needs: the same patient and visit with another finding (the true counterfactual), with another patient's
identity (the true identity swap), and the finding's mask.

All coordinates are normalised to ``[-1, 1]`` so the same phantom renders at any size. Images are
``float32`` arrays of shape ``(size, size)`` with values in ``[0, 1]`` (air dark, bone bright).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FINDINGS",
    "PHANTOM_VERSION",
    "Cohort",
    "Finding",
    "Identity",
    "Nuisance",
    "PhantomCase",
    "finding_mask",
    "finding_region",
    "render",
]

FINDINGS: tuple[str, ...] = ("normal", "nodule", "effusion")
#: bumped whenever rendering changes, so cached judges and data derived from phantoms are rebuilt
PHANTOM_VERSION = 2


def _rng(*key: object) -> np.random.Generator:
    """A generator seeded from a stable hash of ``key`` (independent streams per patient/visit)."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass(frozen=True)
class Identity:
    """Anatomy that makes a patient recognisable. Lengths are in normalised image units."""

    body_w: float
    body_h: float
    body_p: float
    lung_cx: float
    lung_cy: float
    lung_w: tuple[float, float]
    lung_h: tuple[float, float]
    lung_tilt: tuple[float, float]
    heart_x: float
    heart_y: float
    heart_rx: float
    heart_ry: float
    spine_w: float
    rib_count: int
    rib_spacing: float
    rib_curve: float
    rib_width: float
    tissue: float
    lung_density: float
    texture: tuple[tuple[float, float, float, float], ...]

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Identity:
        u = rng.uniform
        texture = tuple(
            (float(u(3.0, 9.0)), float(u(0, 2 * np.pi)), float(u(0, np.pi)), float(u(0.025, 0.05)))
            for _ in range(3)
        )
        return cls(
            body_w=float(u(0.70, 0.92)),
            body_h=float(u(0.78, 0.95)),
            body_p=float(u(2.0, 4.0)),
            lung_cx=float(u(0.28, 0.40)),
            lung_cy=float(u(-0.12, 0.05)),
            lung_w=(float(u(0.17, 0.27)), float(u(0.17, 0.27))),
            lung_h=(float(u(0.40, 0.60)), float(u(0.40, 0.60))),
            lung_tilt=(float(u(-0.25, 0.25)), float(u(-0.25, 0.25))),
            heart_x=float(u(0.0, 0.16)),
            heart_y=float(u(0.10, 0.32)),
            heart_rx=float(u(0.14, 0.26)),
            heart_ry=float(u(0.11, 0.20)),
            spine_w=float(u(0.05, 0.12)),
            rib_count=int(rng.integers(5, 9)),
            rib_spacing=float(u(0.12, 0.17)),
            rib_curve=float(u(0.15, 0.55)),
            rib_width=float(u(0.03, 0.045)),
            tissue=float(u(0.45, 0.65)),
            lung_density=float(u(0.08, 0.22)),
            texture=texture,
        )


@dataclass(frozen=True)
class Finding:
    """A finding in lung-relative coordinates (``side`` 0 = image left lung, 1 = image right lung)."""

    kind: str = "normal"
    side: int = 0
    u: float = 0.0
    v: float = 0.0
    radius: float = 0.0
    level: float = 0.0
    strength: float = 0.0

    @classmethod
    def sample(cls, rng: np.random.Generator, kind: str) -> Finding:
        if kind not in FINDINGS:
            raise ValueError(f"unknown finding {kind!r}; expected one of {FINDINGS}")
        side = int(rng.integers(0, 2))
        if kind == "nodule":
            ang, rad = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 1)) * 0.55
            return cls(kind, side, float(rad * np.cos(ang)), float(rad * np.sin(ang)),
                       radius=float(rng.uniform(0.06, 0.10)), strength=float(rng.uniform(0.35, 0.5)))
        if kind == "effusion":
            return cls(kind, side, level=float(rng.uniform(0.25, 0.55)), strength=float(rng.uniform(0.3, 0.45)))
        return cls("normal", side)


@dataclass(frozen=True)
class Nuisance:
    """Acquisition: pose (translation, rotation in radians, scale) and intensity (gamma, contrast,
    brightness, noise standard deviation, noise seed)."""

    tx: float = 0.0
    ty: float = 0.0
    rot: float = 0.0
    scale: float = 1.0
    gamma: float = 1.0
    contrast: float = 1.0
    brightness: float = 0.0
    noise: float = 0.0
    noise_seed: int = 0

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Nuisance:
        u = rng.uniform
        return cls(
            tx=float(u(-0.06, 0.06)),
            ty=float(u(-0.06, 0.06)),
            rot=float(np.deg2rad(u(-6, 6))),
            scale=float(u(0.94, 1.06)),
            gamma=float(np.exp(u(np.log(0.8), np.log(1.25)))),
            contrast=float(u(0.85, 1.1)),
            brightness=float(u(-0.04, 0.04)),
            noise=float(u(0.004, 0.015)),
            noise_seed=int(rng.integers(0, 2**31 - 1)),
        )


def _canonical_grid(size: int, nuisance: Nuisance) -> tuple[np.ndarray, np.ndarray]:
    """Canonical (patient-frame) coordinates of each pixel centre after undoing the pose."""
    c = (np.arange(size, dtype=np.float64) + 0.5) / size * 2 - 1
    y, x = np.meshgrid(c, c, indexing="ij")
    x, y = (x - nuisance.tx) / nuisance.scale, (y - nuisance.ty) / nuisance.scale
    cos, sin = np.cos(-nuisance.rot), np.sin(-nuisance.rot)
    return cos * x - sin * y, sin * x + cos * y


def _smoothstep(d: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-indicator of a signed distance-like field ``d`` (inside where ``d < 0``)."""
    return 1.0 / (1.0 + np.exp(np.clip(d / width, -50, 50)))


def _lung_frame(ident: Identity, side: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates normalised to one lung field: the lung is the unit disc, ``v`` grows downwards."""
    sign = -1.0 if side == 0 else 1.0
    dx, dy = x - sign * ident.lung_cx, y - ident.lung_cy
    t = ident.lung_tilt[side] * sign
    cos, sin = np.cos(t), np.sin(t)
    return (cos * dx + sin * dy) / ident.lung_w[side], (-sin * dx + cos * dy) / ident.lung_h[side]


def _lung_field(ident: Identity, side: int, x: np.ndarray, y: np.ndarray, edge: float) -> np.ndarray:
    lu, lv = _lung_frame(ident, side, x, y)
    return _smoothstep(np.hypot(lu, lv) - 1.0, edge)


def _anatomy(ident: Identity, x: np.ndarray, y: np.ndarray, edge: float) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free canonical anatomy and the union lung mask."""
    body_d = (np.abs(x / ident.body_w) ** ident.body_p + np.abs(y / ident.body_h) ** ident.body_p) ** (
        1 / ident.body_p
    ) - 1.0
    body = _smoothstep(body_d, edge)
    lungs = np.maximum(_lung_field(ident, 0, x, y, edge), _lung_field(ident, 1, x, y, edge))
    tex = sum(a * np.sin(f * (np.cos(th) * x + np.sin(th) * y) + ph) for f, ph, th, a in ident.texture)
    # ribs: curved horizontal bands, brighter, visible across the lung fields
    ribs = np.zeros_like(x)
    for k in range(ident.rib_count):
        y0 = ident.lung_cy - 0.55 + k * ident.rib_spacing
        yc = y0 + ident.rib_curve * (np.abs(x) - 0.3) ** 2
        ribs = np.maximum(ribs, _smoothstep(np.abs(y - yc) - ident.rib_width, edge * 0.6))
    ribs *= _smoothstep(np.abs(x) - ident.body_w * 0.92, edge)
    heart = _smoothstep(np.hypot((x - ident.heart_x) / ident.heart_rx, (y - ident.heart_y) / ident.heart_ry) - 1,
                        edge * 4)
    spine = _smoothstep(np.abs(x) - ident.spine_w, edge) * _smoothstep(np.abs(y) - 0.98, edge)
    img = ident.tissue * body
    img = img * (1 - lungs) + (ident.lung_density + tex) * lungs * body
    img = img + 0.22 * ribs * body
    img = np.maximum(img, 0.70 * heart * body + img * (1 - heart))
    img = np.maximum(img, (ident.tissue + 0.32) * spine * body)
    return img, lungs


def finding_mask(ident: Identity, finding: Finding, nuisance: Nuisance, size: int) -> np.ndarray:
    """Soft map in ``[0, 1]`` of where ``finding`` changes the image (all zeros for ``normal``)."""
    x, y = _canonical_grid(size, nuisance)
    edge = 1.5 / size
    if finding.kind == "normal":
        return np.zeros((size, size), np.float32)
    lung = _lung_field(ident, finding.side, x, y, edge)
    lu, lv = _lung_frame(ident, finding.side, x, y)
    if finding.kind == "nodule":
        du = (lu - finding.u) * ident.lung_w[finding.side]
        dv = (lv - finding.v) * ident.lung_h[finding.side]
        return np.exp(-(du**2 + dv**2) / (2 * finding.radius**2)).astype(np.float32) * lung
    # effusion: everything in the lung below a meniscus that rises towards the lateral wall
    sign = -1.0 if finding.side == 0 else 1.0
    meniscus = (1 - 2 * finding.level) - 0.35 * np.clip(sign * lu, 0, 1) ** 2
    return (_smoothstep(meniscus - lv, 0.06) * lung).astype(np.float32)


def finding_region(ident: Identity, kind: str, nuisance: Nuisance, size: int) -> np.ndarray:
    """Boolean ``(size, size)`` map of where a finding of class ``kind`` can appear for this patient and
    pose: both lung fields for a nodule, both lung bases (the largest effusion) for an effusion."""
    if kind == "normal":
        return np.zeros((size, size), bool)
    if kind == "nodule":
        x, y = _canonical_grid(size, nuisance)
        lungs = np.maximum(_lung_field(ident, 0, x, y, 1.5 / size), _lung_field(ident, 1, x, y, 1.5 / size))
        return lungs > 0.05
    largest = [Finding("effusion", side, level=0.55, strength=1.0) for side in (0, 1)]
    return np.maximum(*(finding_mask(ident, f, nuisance, size) for f in largest)) > 0.05


def render(ident: Identity, finding: Finding, nuisance: Nuisance, size: int, noise: bool = True) -> np.ndarray:
    """Render one phantom radiograph of shape ``(size, size)``, ``float32`` in ``[0, 1]``."""
    x, y = _canonical_grid(size, nuisance)
    edge = 1.5 / size
    img, _ = _anatomy(ident, x, y, edge)
    img = img + finding.strength * finding_mask(ident, finding, nuisance, size)
    img = np.clip(img, 0, 1) ** nuisance.gamma
    img = nuisance.contrast * img + nuisance.brightness
    if noise and nuisance.noise > 0:
        img = img + np.random.default_rng(nuisance.noise_seed).normal(0, nuisance.noise, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


@dataclass(frozen=True)
class PhantomCase:
    """One image of a cohort with everything needed to re-render it or its oracles."""

    patient_index: int
    visit: int
    patient_id: str
    identity: Identity
    finding: Finding
    nuisance: Nuisance

    def image(self, size: int, noise: bool = True) -> np.ndarray:
        return render(self.identity, self.finding, self.nuisance, size, noise)

    def mask(self, size: int) -> np.ndarray:
        return finding_mask(self.identity, self.finding, self.nuisance, size)

    def region(self, kind: str, size: int) -> np.ndarray:
        """Where a finding of class ``kind`` could appear in this image (see :func:`finding_region`)."""
        return finding_region(self.identity, kind, self.nuisance, size)

    def with_finding(self, finding: Finding) -> PhantomCase:
        """The oracle counterfactual: same patient, same visit, another finding."""
        return dataclasses.replace(self, finding=finding)

    def with_identity(self, identity: Identity) -> PhantomCase:
        """The oracle identity swap: another patient's anatomy, same finding and acquisition."""
        return dataclasses.replace(self, identity=identity)


class Cohort:
    """A deterministic cohort: ``patients`` patients with ``images_per_patient`` visits each.

    Two cohorts with different ``seed`` share no patients (identities are drawn from independent
    streams). Findings are drawn per visit, independent of identity, balanced over :data:`FINDINGS`.
    """

    def __init__(self, patients: int, images_per_patient: int, seed: int = 0) -> None:
        if patients < 1 or images_per_patient < 1:
            raise ValueError("a cohort needs at least one patient and one image per patient")
        self.patients, self.images_per_patient, self.seed = patients, images_per_patient, seed

    def patient_id(self, i: int) -> str:
        return f"PH{self.seed:04d}{i:05d}"

    def identity(self, i: int) -> Identity:
        return Identity.sample(_rng("identity", self.seed, i))

    def case(self, i: int, visit: int) -> PhantomCase:
        rng = _rng("visit", self.seed, i, visit)
        kind = FINDINGS[int(rng.integers(0, len(FINDINGS)))]
        return PhantomCase(i, visit, self.patient_id(i), self.identity(i), Finding.sample(rng, kind),
                           Nuisance.sample(rng))

    def __len__(self) -> int:
        return self.patients * self.images_per_patient

    def __iter__(self):
        for i in range(self.patients):
            for v in range(self.images_per_patient):
                yield self.case(i, v)

    def arrays(self, size: int) -> tuple[np.ndarray, list[str], list[str]]:
        """All images ``(N, size, size)`` with their patient ids and findings, in cohort order."""
        cases = list(self)
        images = np.stack([c.image(size) for c in cases])
        return images, [c.patient_id for c in cases], [c.finding.kind for c in cases]
