"""DICOM markers tell the truth about the pixels (PS3.15 E.3.1/E.3.2, PS3.3 C.7.6.1): only a full
anonymization says Burned In Annotation NO / Recognizable Visual Features NO with the clean-pixel codes;
residual and counterfactual outputs say Recognizable Visual Features YES, carry no clean-pixel code and
describe what was done; headers-only work leaves the pixel markers as the input had them."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_testlib import KEY
from pydicom.sr.codedict import codes

from monai_anon_app.data.phantoms import Cohort
from monai_anon_app.dicom.options import DeidOptions
from monai_anon_app.dicom.phantom_headers import write_phantom_dicom
from monai_anon_app.dicom.pixel_change import KEPT, PixelChange, anonymized, counterfactual, of_command
from monai_anon_app.dicom.process import process_dicom

OPTIONS = DeidOptions(key=KEY)
BASIC = codes.cid7050.BasicApplicationConfidentialityProfile.value
CLEAN_PIXELS = codes.cid7050.CleanPixelDataOption.value
CLEAN_FEATURES = codes.cid7050.CleanRecognizableVisualFeaturesOption.value


def _read(path: Path) -> pydicom.FileDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(str(path))


@pytest.fixture
def radiograph(tmp_path) -> Path:
    """A DX phantom whose input markers claim the opposite of the truth for a kept identity: BIA YES, RVF NO."""
    cohort = Cohort(1, 1, seed=5)
    case = next(iter(cohort))
    path = tmp_path / "in.dcm"
    write_phantom_dicom(path, case.image(32), case, cohort, (1.0, 1.0))
    ds = _read(path)
    ds.BurnedInAnnotation, ds.RecognizableVisualFeatures = "YES", "NO"
    ds.save_as(str(path))
    return path


def _run(src: Path, out: Path, change: PixelChange) -> pydicom.FileDataset:
    fn = None if not change.changed else (lambda px, key: np.flipud(px).astype(np.float32))
    written, _ = process_dicom(src, out, OPTIONS, fn, change)
    assert written == out
    return _read(out)


def _codes(ds) -> list[str]:
    return [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]


def test_only_a_full_anonymization_claims_clean_pixels(radiograph, tmp_path, dciodvfy):
    ds = _run(radiograph, tmp_path / "full.dcm", anonymized("full"))
    assert ds.PatientIdentityRemoved == "YES"
    assert (ds.BurnedInAnnotation, ds.RecognizableVisualFeatures) == ("NO", "NO")
    assert _codes(ds) == [BASIC, CLEAN_PIXELS, CLEAN_FEATURES]
    assert "synthetic identity" in ds.DerivationDescription and "regenerated" in ds.DerivationDescription
    assert "pixels regenerated with a synthetic identity" in list(ds.DeidentificationMethod)
    assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
    assert dciodvfy(tmp_path / "full.dcm") <= dciodvfy(radiograph)


@pytest.mark.parametrize(("change", "words"), [
    (anonymized("residual"), ("residual", "identifying detail")),
    (counterfactual("nodule", "residual"), ("Counterfactual", "class nodule", "identity", "not anonymized")),
    (counterfactual("normal", "full"), ("Counterfactual", "class normal", "regenerated", "not anonymized")),
    (counterfactual(None, "residual"), ("Counterfactual", "a reference image", "not anonymized")),
])
def test_residual_and_counterfactual_outputs_keep_the_identity_and_say_so(radiograph, tmp_path, dciodvfy, change,
                                                                         words):
    out = tmp_path / "out.dcm"
    ds = _run(radiograph, out, change)
    assert ds.PatientIdentityRemoved == "YES"  # the headers are de-identified all the same
    assert ds.RecognizableVisualFeatures == "YES"  # the input said NO: not carried over, not claimed
    assert ds.BurnedInAnnotation == "YES"  # the input's, never set to NO
    assert _codes(ds) == [BASIC]
    assert not {CLEAN_PIXELS, CLEAN_FEATURES} & set(_codes(ds))
    assert all(word in ds.DerivationDescription for word in words), ds.DerivationDescription
    assert change.method in list(ds.DeidentificationMethod)
    assert dciodvfy(out) <= dciodvfy(radiograph)


def test_headers_only_leaves_the_pixel_markers_as_they_were(radiograph, tmp_path):
    before = _read(radiograph)
    ds = _run(radiograph, tmp_path / "kept.dcm", KEPT)
    assert ds.PixelData == before.PixelData
    assert (ds.BurnedInAnnotation, ds.RecognizableVisualFeatures) == ("YES", "NO")  # the input's own claims
    assert _codes(ds) == [BASIC] and "DerivationDescription" not in ds


def test_each_command_maps_to_its_change():
    assert of_command("anonymize", "full") == anonymized("full") and of_command("anonymize", "full").clean
    assert not of_command("anonymize", "residual").clean
    assert of_command("counterfactual", "full", "nodule") == counterfactual("nodule", "full")
    assert not of_command("counterfactual", "full", "nodule").clean
    assert of_command("anonymize", "full", headers_only=True) == KEPT
    with pytest.raises(ValueError, match="mode"):
        anonymized("partial")
    for change in (anonymized("full"), anonymized("residual"), counterfactual("nodule", "full"), KEPT):
        assert change.method is None or len(change.method) <= 64  # De-identification Method is LO
