"""Datastores for the app: a local study folder (DICOM, NIfTI, PNG) with labels, or a DICOMweb server.

* Local: MONAI Label's :class:`LocalDatastore` with DICOM suffixes added. Images sit in the studies
  folder itself, or in its ``images/`` sub-folder when the top level holds none (the layout
  ``monai-anon phantoms`` writes). A ``labels.csv`` (``file,patient_id,finding,…``) next to them is
  copied into each image's info once, so training can read ``patient_id`` and ``finding`` there.
* DICOMweb: MONAI Label's :class:`DICOMWebDatastore` keeping series as downloaded DICOM folders (no NIfTI
  conversion, so the original headers and rescale stay available), listing only projection
  radiographs (CR, DX) and never downloading the dcmqi tools it would want for DICOM SEG.
"""

from __future__ import annotations

import csv
import fnmatch
import logging
import os
import time
from pathlib import Path
from typing import Any

from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore
from monailabel.interfaces.datastore import Datastore
from pydicom.dataset import Dataset

from monai_anon_app.server.request_errors import RequestError
from monai_anon_app.server.uploads import dicom_files

__all__ = ["AnonDICOMWebDatastore", "image_path", "import_labels", "make_local_datastore", "training_records"]

logger = logging.getLogger(__name__)
DICOM_EXTENSIONS = ("*.dcm", "*.dicom")
LABEL_KEYS = ("patient_id", "finding")
MODALITIES = ("CR", "DX")


def _has_images(folder: Path, patterns: list[str]) -> bool:
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return any(fnmatch.filter(names, p) for p in patterns)


def make_local_datastore(studies: str, extensions: list[str], auto_reload: bool, read_only: bool,
                         labels_csv: Path | None = None) -> LocalDatastore:
    """A :class:`LocalDatastore` over ``studies`` (see the module docstring), labels imported."""
    patterns = list(dict.fromkeys([*extensions, *DICOM_EXTENSIONS]))
    root = Path(studies)
    images_dir = "."
    if not _has_images(root, patterns) and _has_images(root / "images", patterns):
        images_dir = "images"
    ds = LocalDatastore(studies, images_dir=images_dir, extensions=patterns, auto_reload=auto_reload,
                        read_only=read_only)
    csv_path = labels_csv or root / "labels.csv"
    if csv_path.is_file() and not read_only:
        n = import_labels(ds, csv_path)
        if n:
            logger.info("copied patient_id/finding of %d images from %s into the datastore", n, csv_path)
    return ds


def import_labels(ds: LocalDatastore, csv_path: Path) -> int:
    """Copy ``patient_id``/``finding`` (and other columns) of ``labels.csv`` rows into the info of images
    that lack them; returns how many images were updated. Rows naming unknown images are ignored."""
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    updated = 0
    known = set(ds.list_images())
    for row in rows:
        if not all(row.get(k) for k in LABEL_KEYS) or not row.get("file"):
            continue
        image_id, _ = ds._to_id(os.path.basename(row["file"]))
        if image_id not in known:
            continue
        info = ds.get_image_info(image_id)
        if all(info.get(k) for k in LABEL_KEYS):
            continue
        extra = {k: v for k, v in row.items() if k not in ("file", "image_size") and v not in (None, "")}
        ds.update_image_info(image_id, extra)
        updated += 1
    return updated


class AnonDICOMWebDatastore(DICOMWebDatastore):
    """DICOMweb datastore keeping DICOM series folders (see the module docstring)."""

    def __init__(self, client, cache_path: str | None, modalities: tuple[str, ...] = MODALITIES,
                 list_ttl_s: float = 10.0) -> None:
        self._modalities = modalities
        self._list_ttl_s = list_ttl_s
        self._listed: tuple[float, dict[str, dict[str, Any]]] = (0.0, {})
        super().__init__(client=client, search_filter={}, cache_path=cache_path, fetch_by_frame=False,
                         convert_to_nifti=False)

    def list_images(self) -> list[str]:
        return list(self._series().keys())

    def _series(self, fresh: bool = False) -> dict[str, dict[str, Any]]:
        """Series UID -> QIDO attributes of every listed series (queried at most every ``list_ttl_s``)."""
        when, listed = self._listed
        if not fresh and time.monotonic() - when < self._list_ttl_s:
            return listed
        out: dict[str, dict[str, Any]] = {}
        for item in self._client.search_for_series(search_filters=self._search_filter):
            ds = Dataset.from_json(item)
            modality = str(ds.get("Modality", "") or "").upper()
            if modality in self._modalities and ds.get("SeriesInstanceUID"):
                out[str(ds.SeriesInstanceUID)] = {"Modality": modality,
                                                  "StudyInstanceUID": str(ds.get("StudyInstanceUID", ""))}
        self._listed = (time.monotonic(), out)
        return out

    def get_labeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        return []  # no segmentation labels here: skip MONAI Label's DICOM SEG lookups

    def get_unlabeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        return self.list_images()

    def _ensure_object(self, image_id: str) -> None:
        """Register a listed series in the local cache datastore, so it can carry info."""
        if image_id in self._datastore.objects:
            return
        if image_id not in self._series() and image_id not in self._series(fresh=True):
            raise RequestError(404, f"image {image_id!r} is not on the DICOMweb server")
        os.makedirs(os.path.join(self._datastore.image_path(), image_id), exist_ok=True)
        self.add_image(image_id, os.path.join(self._datastore.image_path(), image_id), {"SeriesInstanceUID": image_id})

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        with_info = {"ts": 0, "name": image_id, **image_info}
        self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=with_info, ext=""))
        self._update_datastore_file()
        return image_id

    def get_image_uri(self, image_id: str) -> str:
        self._ensure_object(image_id)
        return super().get_image_uri(image_id)

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        if image_id not in self._datastore.objects:
            try:
                self._ensure_object(image_id)
            except RequestError:
                return {}
        return super().get_image_info(image_id)

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        self._ensure_object(image_id)
        super().update_image_info(image_id, info)


def image_path(datastore: Datastore, image_id: str, what: str = "image") -> str:
    """Local path of a datastore image (downloads a DICOMweb series); 404 when unknown, 502 when it cannot be
    fetched (blocking)."""
    try:
        uri = datastore.get_image_uri(image_id)
    except RequestError:
        raise
    except (IndexError, KeyError):
        uri = ""
    except Exception as exc:
        logger.warning("could not fetch image %s: %s", image_id, exc)
        raise RequestError(502, f"the {what} {image_id!r} could not be fetched from the datastore "
                                f"({exc.__class__.__name__})") from None
    if not uri or not os.path.exists(uri):
        raise RequestError(404, f"{what} {image_id!r} is not in the datastore")
    return uri


def training_records(datastore: Datastore) -> tuple[list[tuple[str, str, str]], list[str]]:
    """``(path, patient_id, finding)`` of every datastore image whose info names both, and the ids of
    those skipped (no labels, or a series of several images)."""

    records, skipped = [], []
    for image_id in datastore.list_images():
        info = datastore.get_image_info(image_id) or {}
        patient, finding = info.get("patient_id"), info.get("finding")
        if not patient or not finding:
            skipped.append(image_id)
            continue
        path = Path(datastore.get_image_uri(image_id))
        if path.is_dir():
            files = dicom_files(path)
            if len(files) != 1:
                skipped.append(image_id)
                continue
            path = files[0]
        records.append((str(path), str(patient), str(finding)))
    return records, skipped
