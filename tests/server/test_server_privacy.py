"""Identifying data outside the DICOM headers, against the real server: result NIfTIs carry no free text of
the input, and the PHI-planted fixture (40+ places, as DX radiographs) leaves no trace in the export task's
zip, its member names or its JSON, with markers that say what was done to the pixels."""

from __future__ import annotations

import io
import json
import zipfile

import nibabel as nib
import numpy as np
import pydicom
import pytest
from phi_fixture import PHI_DATES, PHI_TOKENS, build_phi_radiograph
from server_testlib import multipart_parts, oblique_affine, smooth_image

FREE_TEXT = {"descrip": b"Patient John Doe CANARYDESC", "aux_file": b"CANARYAUXFILE", "intent_name": b"CANARYINTNT",
             "db_name": b"CANARYDBNAME"}
EXTENSION = b"CANARYEXTENSION Patient John Doe, MRN 1234"


@pytest.fixture
def nifti_with_free_text() -> bytes:
    img = nib.Nifti1Image(np.ascontiguousarray(smooth_image((48, 40), 0.0, 4000.0).T[:, :, None]), oblique_affine())
    for field, value in FREE_TEXT.items():
        img.header[field] = value
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", EXTENSION))
    return img.to_bytes()


@pytest.mark.parametrize("task", ["anonymize", "counterfactual", "explain"])
def test_results_carry_no_free_text_of_the_input(server, nifti_with_free_text, task):
    assert all(v in nifti_with_free_text for v in (*FREE_TEXT.values(), EXTENSION))  # really planted
    classes = server.get("/info/").json()["models"]["counterfactual"]["labels"]
    params = {"anonymize": {"seed": 2}, "counterfactual": {"target": classes[-1]}, "explain": {"k": 2, "seed": 2}}
    r = server.post(f"/infer/{task}?output=image", data={"params": json.dumps(params[task])},
                    files={"file": ("scan.nii", nifti_with_free_text)})
    assert r.status_code == 200, r.text
    assert not [v for v in (*FREE_TEXT.values(), EXTENSION, b"John Doe") if v in r.content]
    header = nib.Nifti1Image.from_bytes(r.content).header
    assert [header[f].tobytes().strip(b"\0") for f in FREE_TEXT] == [b""] * len(FREE_TEXT)
    assert len(header.extensions) == 0
    np.testing.assert_allclose(nib.Nifti1Image.from_bytes(r.content).affine, oblique_affine(), atol=1e-5)


@pytest.fixture
def phi_zip() -> tuple[bytes, list[str]]:
    """The two visits of the PHI-planted patient as DX radiographs, in a zip laid out as archives are."""
    buffer, uids = io.BytesIO(), []
    with zipfile.ZipFile(buffer, "w") as zf:
        for visit in (0, 1):
            ds, planted = build_phi_radiograph(visit)
            uids += planted
            member = io.BytesIO()
            ds.save_as(member, write_like_original=True)
            zf.writestr(f"Quixote^Zebulon/2019030{4 + visit}/PID7731XQ_{visit}.dcm", member.getvalue())
    return buffer.getvalue(), uids


def _leaks(details: dict, archive: bytes, needles) -> list[str]:
    found = [f"{n!r} in the JSON reply" for n in needles if n.lower() in json.dumps(details).lower()]
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        for name in zf.namelist():
            data = zf.read(name).lower()
            found += [f"{n!r} in {name}" for n in needles if n.lower() in name.lower() or n.lower().encode() in data]
    return found


@pytest.mark.parametrize(("mode", "clean"), [("full", True), ("residual", False)])
def test_the_phi_fixture_through_the_export_task(server, phi_zip, mode, clean):
    content, uids = phi_zip
    r = server.post("/infer/export?output=all", data={"params": json.dumps({"seed": 4, "mode": mode})},
                    files={"file": ("study.zip", content, "application/zip")})
    assert r.status_code == 200, r.text
    details, archive = multipart_parts(r)
    assert details["summary"]["done"] == 2, details["summary"]
    assert _leaks(details, archive, (*PHI_TOKENS, *PHI_DATES, *uids)) == []
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        for name in zf.namelist():
            ds = pydicom.dcmread(io.BytesIO(zf.read(name)))
            assert name == f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
            codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
            assert ds.PatientIdentityRemoved == "YES"
            if clean:
                assert (ds.BurnedInAnnotation, ds.RecognizableVisualFeatures) == ("NO", "NO")
                assert codes == ["113100", "113101", "113102"]
            else:
                assert ds.RecognizableVisualFeatures == "YES" and codes == ["113100"]
                assert "residual" in ds.DerivationDescription
