"""The export task against the real server: it repeats the anonymize preview pixel for pixel, takes a whole
series in one request (a zip upload, or several image ids) and keeps a series' UIDs together."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from server_testlib import dicom_variant, identity_seed, multipart_parts

PARAMS = {"seed": 21, "candidates": 4, "mode": "full"}


def keyring(server):
    from monai_anon_app.dicom.keys import KeyRing, load_key

    return KeyRing(load_key(None, server.workdir / "app" / "deid.key"))


def stored_as(preview: np.ndarray, source: Path) -> np.ndarray:
    """``preview`` as the export stores it in ``source``'s pixel format (rounded to stored values, clipped)."""
    from monai_anon_app.dicom.pixels import read_dicom_image

    meta = read_dicom_image(source).meta
    stored = np.clip(np.rint((preview - meta["intercept"]) / meta["slope"]), *meta["stored_range"])
    return stored * meta["slope"] + meta["intercept"]


def exported_images(content: bytes) -> dict[str, pydicom.Dataset]:
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        return {name: pydicom.dcmread(io.BytesIO(zf.read(name))) for name in zf.namelist()}


def pixels_of(ds: pydicom.Dataset) -> np.ndarray:
    from monai_anon_app.dicom.pixels import image_from_dataset

    return image_from_dataset(ds, "exported").pixels


def assert_same_image(exported: np.ndarray, expected: np.ndarray, source: Path) -> None:
    want = stored_as(expected, source)
    step = float(pydicom.dcmread(str(source), stop_before_pixels=True).get("RescaleSlope", 1) or 1)
    assert exported.shape == want.shape
    assert np.abs(exported - want).max() <= 1.001 * step  # float rounding may move a value by one stored step
    assert np.mean(exported == want) > 0.99


@pytest.fixture
def studies(server) -> Path:
    return Path(server.studies, "images")


def test_export_repeats_the_anonymize_preview_pixel_for_pixel(server, studies, reference):
    source = sorted(studies.glob("PH*.dcm"))[0]
    image = source.stem
    r = server.post(f"/infer/anonymize?image={image}", data={"params": json.dumps(PARAMS)})
    assert r.status_code == 200, r.text
    info, nifti = multipart_parts(r)
    expected_seed = identity_seed(server, source, PARAMS["seed"])
    assert info["seed"] == PARAMS["seed"] and info["identity_seed"] == expected_seed != PARAMS["seed"]
    assert info["candidates"] == 4 and info["mode"] == "full" and info["input"]["format"] == "dicom"
    out = server.workdir / "preview.nii"
    out.write_bytes(nifti)
    import nibabel as nib

    preview = np.asarray(nib.load(str(out)).dataobj, dtype=np.float32)[:, :, 0].T
    from monai_anon_app.dicom.pixels import read_dicom_image

    expected = reference().anonymize(read_dicom_image(source).pixels, seed=expected_seed, candidates=4).image
    np.testing.assert_allclose(preview, expected, atol=1e-4 * float(np.ptp(expected)))

    # the same image uploaded (what the Slicer extension sends) gets the same identity: it follows the patient
    upload = server.post("/infer/anonymize?output=json", data={"params": json.dumps(PARAMS)},
                         files={"file": ("any-name.dcm", source.read_bytes())})
    assert upload.json()["identity_seed"] == expected_seed

    e = server.post(f"/infer/export?image={image}&output=all", data={"params": json.dumps(PARAMS)})
    assert e.status_code == 200, e.text
    details, archive = multipart_parts(e)
    assert details["seed"] == PARAMS["seed"] and details["candidates"] == 4 and details["mode"] == "full"
    (ds,) = exported_images(archive).values()
    assert_same_image(pixels_of(ds), preview, source)


def test_one_identity_per_patient_and_the_seed_as_is_without_a_patient(server, studies):
    def seed_of(query: str) -> int:
        r = server.post(f"/infer/anonymize?{query}&output=json", data={"params": json.dumps({"seed": 5})})
        assert r.status_code == 200, r.text
        assert r.json()["seed"] == 5
        return r.json()["identity_seed"]

    visits = sorted(studies.glob("PH*_v0*.dcm"))
    by_patient: dict[str, set[int]] = {}
    for path in visits[:6]:
        patient = str(pydicom.dcmread(str(path), stop_before_pixels=True).PatientID)
        by_patient.setdefault(patient, set()).add(seed_of(f"image={path.stem}"))
    assert all(len(seeds) == 1 for seeds in by_patient.values()) and len(by_patient) >= 2
    assert len(set().union(*by_patient.values())) == len(by_patient)  # another patient, another identity
    assert seed_of("image=radiograph16") == 5 and seed_of("image=oblique") == 5  # PNG, NIfTI: no patient


@pytest.fixture
def series_zip(studies, tmp_path) -> tuple[bytes, list[Path]]:
    """A zip as a client sends a series: two images of one series (one of them in a sub-folder), another
    visit of the same patient, and a text file."""
    first, second, third = sorted(studies.glob("PH*.dcm"))[:3]
    head = pydicom.dcmread(str(first), stop_before_pixels=True)
    same_series = dicom_variant(second, tmp_path / "IM0002", StudyInstanceUID=head.StudyInstanceUID,
                                SeriesInstanceUID=head.SeriesInstanceUID, InstanceNumber=2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(first, "IM0001")
        zf.write(same_series, "sub/folder/IM0002")
        zf.write(third, "visit3.dcm")
        zf.writestr("README.txt", "series exported by a test\n")
    return buffer.getvalue(), [first, same_series, third]


def test_a_series_goes_in_one_request_with_its_uids_kept_together(server, series_zip, reference):
    from monai_anon_app.dicom.pixels import read_dicom_image

    content, sources = series_zip
    r = server.post("/infer/export?output=all", data={"params": json.dumps(PARAMS)},
                    files={"file": ("series.zip", content, "application/zip")})
    assert r.status_code == 200, r.text
    details, archive = multipart_parts(r)
    summary = details["summary"]
    assert summary["done"] == 3 and not summary["refused"] and not summary["failed"]
    assert summary["skipped"] == [{"file": "README.txt", "reason": "not a DICOM file"}]
    out = {str(ds.SOPInstanceUID): ds for ds in exported_images(archive).values()}
    assert len(out) == 3 and len(details["files"]) == 3
    assert len({str(ds.SeriesInstanceUID) for ds in out.values()}) == 2 == len(details["study_uids"])
    assert len({str(ds.PatientID) for ds in out.values()}) == 1
    keys = keyring(server)
    seed = identity_seed(server, sources[0], PARAMS["seed"])
    for source in sources:
        original = pydicom.dcmread(str(source), stop_before_pixels=True)
        ds = out[keys.uid(str(original.SOPInstanceUID))]
        # one de-identification pass, one key: the series and study of each image map as a whole
        assert ds.SeriesInstanceUID == keys.uid(str(original.SeriesInstanceUID))
        assert ds.StudyInstanceUID == keys.uid(str(original.StudyInstanceUID))
        # every image of the patient gets the patient's one synthetic identity, the preview's
        expected = reference().anonymize(read_dicom_image(source).pixels, seed=seed, candidates=4).image
        assert_same_image(pixels_of(ds), expected, source)


def test_several_image_ids_are_one_export(server, image_ids):
    ids = [i for i in image_ids if i.startswith("PH")][:2]
    r = server.post(f"/infer/export?image={ids[0]}&image={ids[1]}&output=json",
                    data={"params": json.dumps({"headers_only": True})})
    assert r.status_code == 200, r.text
    assert r.json()["summary"]["done"] == 2 and len(r.json()["files"]) == 2
