"""Labelled image sets for training and evaluation: from a phantom cohort or a folder with ``labels.csv``."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monai_anon_app.data.phantoms import Cohort
from monai_anon_app.data.transforms import from_model, to_model
from monai_anon_app.dicom.pixels import read_dicom_image
from monai_anon_app.errors import InputError
from monai_anon_app.imageio.images import image_format, read_image

__all__ = ["ImageSet", "PatientBatchSampler", "from_cohort", "load_folder"]


@dataclass
class ImageSet:
    """``images (N, S, S)`` float32 in ``[0, 1]`` with per-image ``patient_ids``, ``findings`` and ``names``;
    ``masks (N, S, S)`` in ``[0, 1]`` (where the finding is) when the data provides them, else ``None``."""

    images: np.ndarray
    patient_ids: list[str]
    findings: list[str]
    names: list[str]
    masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: Sequence[int] | np.ndarray) -> ImageSet:
        idx = np.asarray(idx, dtype=int)
        return ImageSet(self.images[idx], [self.patient_ids[i] for i in idx], [self.findings[i] for i in idx],
                        [self.names[i] for i in idx], None if self.masks is None else self.masks[idx])

    def split_patients(self, fraction: float, seed: int = 0) -> tuple[ImageSet, ImageSet]:
        """Split by patient: ``(rest, held_out)`` with about ``fraction`` of the patients held out."""
        patients = sorted(set(self.patient_ids))
        rng = np.random.default_rng(seed)
        n_out = max(1, round(fraction * len(patients))) if fraction > 0 else 0
        held = set(rng.permutation(patients)[:n_out].tolist())
        out = [i for i, p in enumerate(self.patient_ids) if p in held]
        rest = [i for i, p in enumerate(self.patient_ids) if p not in held]
        return self.subset(rest), self.subset(out)


def from_cohort(cohort: Cohort, size: int) -> ImageSet:
    """Render a phantom cohort at ``size`` (scaled like any input through :func:`to_model`)."""
    cases = list(cohort)
    images = np.stack([to_model(c.image(size), size).tensor[0].numpy() for c in cases])
    masks = np.stack([c.mask(size) for c in cases]).astype(np.float32)
    return ImageSet(images, [c.patient_id for c in cases], [c.finding.kind for c in cases],
                    [f"{c.patient_id}_v{c.visit:02d}" for c in cases], masks)


def load_folder(folder: str | Path, size: int) -> ImageSet:
    """Read every image listed in ``folder/labels.csv`` (columns ``file,patient_id,finding``, and optionally
    ``mask``: an image of where the finding is, values in ``[0, 1]``, 8-bit ``0…255`` or 16-bit ``0…65535``;
    empty for none)."""
    folder = Path(folder)
    labels = folder / "labels.csv"
    if not labels.is_file():
        raise InputError(f"{folder} has no labels.csv (columns file,patient_id,finding)")
    with labels.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"file", "patient_id", "finding"} - set(rows[0].keys() if rows else ())
    if missing:
        raise InputError(f"{labels} lacks the column(s) {', '.join(sorted(missing))}")
    images, masks = [], []
    with_masks = "mask" in rows[0]
    for row in rows:
        path = folder / row["file"]
        reader = read_dicom_image if image_format(path) == "dicom" else read_image
        pixels = reader(path).pixels
        images.append(to_model(pixels, size).tensor[0].numpy())
        if with_masks:
            masks.append(_read_mask(folder, row.get("mask") or "", size, pixels.shape))
    return ImageSet(np.stack(images), [r["patient_id"] for r in rows], [r["finding"] for r in rows],
                    [r["file"] for r in rows], np.stack(masks) if with_masks else None)


def _read_mask(folder: Path, name: str, size: int, shape: tuple[int, ...]) -> np.ndarray:
    """A finding mask resized to ``(size, size)`` in ``[0, 1]``; all zeros when ``name`` is empty."""
    if not name:
        return np.zeros((size, size), np.float32)
    pixels = read_image(folder / name).pixels.astype(np.float32)
    if pixels.shape != shape:
        raise InputError(f"mask {name} is {pixels.shape}, its image is {shape}; they must have the same size")
    top = float(pixels.max())
    scaled = pixels if top <= 1 else pixels / (255.0 if top <= 255 else 65535.0)
    return from_model(np.clip(scaled, 0, 1), 0.0, 1.0, (size, size))


class PatientBatchSampler:
    """Batches of ``patients_per_batch`` patients × ``images_per_patient`` images (for metric losses).

    Patients with fewer images are sampled with replacement. Deterministic for a given ``seed``.

    With ``world`` > 1 (training on several processes), every rank draws the same global batch from the same
    random stream and keeps only its own share of its patients: disjoint between ranks, together the whole
    batch, and the random state stays the same on every rank (one checkpoint serves them all).
    """

    def __init__(self, patient_ids: Sequence[str], patients_per_batch: int, images_per_patient: int,
                 seed: int = 0, rank: int = 0, world: int = 1) -> None:
        self.by_patient: dict[str, list[int]] = {}
        for i, p in enumerate(patient_ids):
            self.by_patient.setdefault(p, []).append(i)
        self.patients = sorted(self.by_patient)
        self.p = min(patients_per_batch, len(self.patients))
        self.k = images_per_patient
        self.rng = np.random.default_rng(seed)
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not one of {world} ranks")
        if self.p < world:
            raise ValueError(f"a batch of {self.p} patients cannot be split between {world} processes: use at "
                             f"least as many patients per batch (and training patients) as processes")
        self.share = np.array_split(np.arange(self.p), world)[rank]

    @property
    def fraction(self) -> float:
        """This rank's share of each batch's patients (1 on a single process)."""
        return len(self.share) / self.p

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            chosen = self.rng.choice(len(self.patients), self.p, replace=False)
            per_patient = []
            for c in chosen:
                pool = self.by_patient[self.patients[c]]
                per_patient.append(self.rng.choice(pool, self.k, replace=len(pool) < self.k))
            yield np.concatenate([per_patient[i] for i in self.share])
