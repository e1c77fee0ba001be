"""Pixels out of DICOM and the model's image back in: geometry, units, MONOCHROME1, rescale, compression
history, derived-image attributes, refusals, headers-only, identity keys, atomic writes."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from dicom_testlib import KEY
from peers import require_module
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, RLELossless

from monai_anon_app.data.phantoms import Cohort
from monai_anon_app.dicom.options import DeidOptions
from monai_anon_app.dicom.phantom_headers import phantom_dataset, write_phantom_dicom
from monai_anon_app.dicom.pixel_change import KEPT, anonymized
from monai_anon_app.dicom.pixels import read_dicom_image
from monai_anon_app.dicom.process import Refused, deidentifier, process_dicom
from monai_anon_app.errors import InputError

TEST_FILES = Path(pydicom.data.DATA_ROOT) / "test_files"
DATA_STORE = Path(require_module("data_store", "pip install -e .[test] (pydicom-data)").__file__).parent / "data"
CR_FILES = sorted((TEST_FILES / "dicomdirtests" / "77654033").glob("CR*/*"))
OPTIONS = DeidOptions(key=KEY)
FULL = anonymized("full")  # a full anonymization: the one change whose markers claim clean pixels


def _corpus(name: str) -> Path:
    return TEST_FILES / name if (TEST_FILES / name).exists() else DATA_STORE / name


def _read(path: Path) -> pydicom.FileDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(str(path))


def _phantom(tmp_path: Path, patients: int = 1, visits: int = 1, size: int = 64) -> list[Path]:
    cohort = Cohort(patients, visits, seed=3)
    paths = []
    for case in cohort:
        path = tmp_path / "in" / f"{case.patient_id}_{case.visit}.dcm"
        write_phantom_dicom(path, case.image(size), case, cohort, (430 / size, 430 / size))
        paths.append(path)
    return paths


class Recorder:
    """A deterministic pixel function that remembers what it was given and what it returned."""

    def __init__(self, shift: float = 0.0, lo: float = -np.inf, hi: float = np.inf) -> None:
        self.shift, self.lo, self.hi = shift, lo, hi
        self.calls: list[tuple[np.ndarray, str, np.ndarray]] = []

    def __call__(self, pixels: np.ndarray, identity: str) -> np.ndarray:
        out = np.clip(np.flipud(pixels) + np.float32(self.shift), self.lo, self.hi).astype(np.float32)
        self.calls.append((pixels.copy(), identity, out))
        return out


def _check_replaced(src: Path, dst: Path, fn: Recorder) -> tuple[pydicom.FileDataset, pydicom.FileDataset]:
    before, after = _read(src), _read(dst)
    image = read_dicom_image(dst)
    returned = fn.calls[-1][2]
    np.testing.assert_array_equal(image.pixels, returned)  # what the model returned is what is stored
    assert image.pixels.mean() == pytest.approx(float(returned.mean()))
    assert image.pixels.std() == pytest.approx(float(returned.std()))
    assert (after.Rows, after.Columns) == (before.Rows, before.Columns) == returned.shape
    for keyword in ("PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                    "RescaleSlope", "RescaleIntercept", "PixelSpacing", "ImagerPixelSpacing"):
        assert after.get(keyword) == before.get(keyword), keyword
    assert list(after.ImageType[:2]) == ["DERIVED", "SECONDARY"]
    assert after.DerivationDescription == FULL.derivation
    assert (after.BurnedInAnnotation, after.RecognizableVisualFeatures) == ("NO", "NO")
    assert [i.CodeValue for i in after.DeidentificationMethodCodeSequence] == ["113100", "113101", "113102"]
    real = returned if after.PhotometricInterpretation == "MONOCHROME2" else \
        np.float32(sum(read_dicom_image(dst).meta["range"])) - returned
    assert float(after.WindowCenter) == pytest.approx((real.min() + real.max()) / 2, rel=1e-4)
    assert float(after.WindowWidth) == pytest.approx(max(real.max() - real.min(), 1), rel=1e-4)
    assert after.file_meta.MediaStorageSOPInstanceUID == after.SOPInstanceUID != before.SOPInstanceUID
    return before, after


def test_dx_phantom_pixels_replaced(tmp_path, dciodvfy):
    src = _phantom(tmp_path)[0]
    fn = Recorder(shift=5, lo=0, hi=4095)
    process_dicom(src, tmp_path / "out.dcm", OPTIONS, fn, FULL)
    given, identity, _ = fn.calls[0]
    np.testing.assert_array_equal(given, read_dicom_image(src).pixels)
    assert identity == deidentifier(OPTIONS).identity_key(_read(src)) and _read(src).PatientID not in identity
    _, after = _check_replaced(src, tmp_path / "out.dcm", fn)
    assert after.LossyImageCompression == "00"
    assert dciodvfy(tmp_path / "out.dcm") == set()  # still a valid DX For Presentation image


@pytest.mark.parametrize("path", CR_FILES, ids=lambda p: p.name)
def test_real_cr_monochrome1(tmp_path, path, dciodvfy):
    image = read_dicom_image(path)
    assert image.meta["photometric"] == "MONOCHROME1"
    ds = _read(path)
    stored = ds.pixel_array
    lo, hi = image.meta["range"]
    real = stored.astype(np.float32) * np.float32(ds.RescaleSlope) + np.float32(ds.RescaleIntercept)
    np.testing.assert_array_equal(image.pixels, np.float32(lo + hi) - real)  # bright = dense
    fn = Recorder()
    process_dicom(path, tmp_path / "out.dcm", OPTIONS, fn, FULL)
    _, after = _check_replaced(path, tmp_path / "out.dcm", fn)
    np.testing.assert_array_equal(after.pixel_array, np.flipud(stored))  # inverted back on the way out
    assert dciodvfy(tmp_path / "out.dcm") <= dciodvfy(path)


def test_signed_rescaled_monochrome1(tmp_path):
    cohort = Cohort(1, 1, seed=5)
    case = next(iter(cohort))
    ds = phantom_dataset(case.image(32), case, cohort, (1.0, 1.0))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR
    ds.Modality, ds.PhotometricInterpretation, ds.PixelRepresentation = "CR", "MONOCHROME1", 1
    ds.RescaleSlope, ds.RescaleIntercept = "0.5", "-100"
    stored = (np.arange(32 * 32).reshape(32, 32) - 512).astype("<i2")
    ds.PixelData = stored.tobytes()
    src = tmp_path / "cr.dcm"
    ds.save_as(str(src), write_like_original=False)
    fn = Recorder(shift=-1.5)  # three stored steps of 0.5: still on the grid
    process_dicom(src, tmp_path / "out.dcm", OPTIONS, fn, FULL)
    _check_replaced(src, tmp_path / "out.dcm", fn)
    assert read_dicom_image(src).pixels.dtype == np.float32


def test_lossy_compressed_source_is_written_uncompressed_and_marked(tmp_path):
    from PIL import Image

    cohort = Cohort(1, 1, seed=6)
    case = next(iter(cohort))
    ds = phantom_dataset(case.image(64), case, cohort, (1.0, 1.0))
    arr8 = np.rint(case.image(64) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr8).save(buf, format="JPEG", quality=90)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    del ds.LossyImageCompression
    src = tmp_path / "jpeg.dcm"
    ds.save_as(str(src), write_like_original=False)
    fn = Recorder(lo=0, hi=255)
    process_dicom(src, tmp_path / "out.dcm", OPTIONS, fn, FULL)
    _, after = _check_replaced(src, tmp_path / "out.dcm", fn)
    assert after.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert (after.LossyImageCompression, after.LossyImageCompressionMethod) == ("01", "ISO_10918_1")


def test_lossless_compressed_source(tmp_path):
    src = _phantom(tmp_path)[0]
    ds = _read(src)
    ds.compress(RLELossless)
    ds.save_as(str(src))
    fn = Recorder(lo=0, hi=4095)
    process_dicom(src, tmp_path / "out.dcm", OPTIONS, fn, FULL)
    _, after = _check_replaced(src, tmp_path / "out.dcm", fn)
    assert after.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1" and after.LossyImageCompression == "00"


@pytest.mark.parametrize(("name", "reason"), [
    ("CT_small.dcm", "not a 2D projection radiograph"),
    ("MR_small.dcm", "not a 2D projection radiograph"),
    ("SC_rgb.dcm", "colour image"),
    ("emri_small.dcm", "multi-frame"),
    ("test-SR.dcm", "without pixel data"),
    ("rtplan.dcm", "without pixel data"),
])
def test_refused_with_a_reason(tmp_path, name, reason):
    with pytest.raises(Refused, match=reason) as info:
        process_dicom(_corpus(name), tmp_path / "out.dcm", OPTIONS, Recorder(), FULL)
    message = str(info.value)
    assert message.endswith(".") and message.count(". ") == 0  # one sentence
    assert not (tmp_path / "out.dcm").exists()


@pytest.mark.parametrize(("name", "reason"), [
    ("SC_rgb.dcm", "colour"), ("emri_small.dcm", "multi-frame"), ("rtplan.dcm", "without pixel data"),
])
def test_read_dicom_image_rejects_with_the_reason(name, reason):
    with pytest.raises(InputError, match=reason):
        read_dicom_image(_corpus(name))


def test_read_dicom_image_applies_rescale():
    image = read_dicom_image(TEST_FILES / "CT_small.dcm")
    ds = _read(TEST_FILES / "CT_small.dcm")
    expected = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(image.pixels, expected)
    assert image.spacing == tuple(float(v) for v in ds.PixelSpacing)


def test_headers_only_keeps_pixels_and_claims_nothing(tmp_path):
    src = _phantom(tmp_path)[0]
    process_dicom(src, tmp_path / "out.dcm", OPTIONS, None, KEPT)
    before, after = _read(src), _read(tmp_path / "out.dcm")
    assert after.PixelData == before.PixelData
    assert after.BurnedInAnnotation == before.BurnedInAnnotation  # carried over, not claimed
    assert "RecognizableVisualFeatures" not in after
    assert [i.CodeValue for i in after.DeidentificationMethodCodeSequence] == ["113100"]
    assert list(after.ImageType) == list(before.ImageType)
    with pytest.raises(ValueError, match="pixel_fn"):
        process_dicom(src, tmp_path / "x.dcm", OPTIONS, None, FULL)


def test_one_identity_per_patient(tmp_path):
    paths = _phantom(tmp_path, patients=2, visits=2, size=16)
    fn = Recorder()
    for p in paths:
        process_dicom(p, tmp_path / "out" / p.name, OPTIONS, fn, FULL)
    keys = [identity for _, identity, _ in fn.calls]
    ids = [_read(p).PatientID for p in paths]
    assert keys[0] == keys[1] and keys[2] == keys[3] and keys[0] != keys[2]
    assert not any(pid in key for pid in ids for key in keys)


def test_a_failure_leaves_no_partial_file(tmp_path):
    src = _phantom(tmp_path)[0]
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match="shape"):
        process_dicom(src, out / "x.dcm", OPTIONS, lambda px, key: px[:8], FULL)
    with pytest.raises(ValueError, match="NaN"):
        process_dicom(src, out / "x.dcm", OPTIONS, lambda px, key: px * np.nan, FULL)
    assert list(out.iterdir()) == []
