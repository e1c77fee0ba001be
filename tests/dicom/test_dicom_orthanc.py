"""A real PACS round trip: Orthanc with the DICOMweb plugin, loopback only, started and stopped here.

Originals are uploaded, read back over WADO-RS (as the DICOMweb datastore does), anonymized through
:func:`export_study_zip`, stored with :func:`stow_study` (STOW-RS), then found by QIDO-RS and read by
WADO-RS, and checked.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import warnings
import zipfile

import numpy as np
import pydicom
import pytest
import requests
from dicom_testlib import KEY
from peers import ORTHANC_DICOMWEB, require_orthanc

from monai_anon_app.data.phantoms import Cohort
from monai_anon_app.dicom.export import export_study_zip, stow_study
from monai_anon_app.dicom.options import DeidOptions
from monai_anon_app.dicom.phantom_headers import write_phantom_dicom
from monai_anon_app.dicom.pixel_change import anonymized

PLUGIN = ORTHANC_DICOMWEB
START_S = 120  # generous: Orthanc starts in about a second, but a busy CI machine may be slow


@pytest.fixture(scope="module", autouse=True)
def orthanc_installed() -> None:
    """Orthanc and its DICOMweb plugin (a skip locally, a failure under CI)."""
    require_orthanc()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def orthanc(tmp_path):
    """A private Orthanc: loopback-only HTTP on a free port, no DICOM listener, storage in tmp."""
    http, dimse = _free_port(), _free_port()
    config = {
        "Name": "monai-anon-test", "StorageDirectory": str(tmp_path / "db"), "IndexDirectory": str(tmp_path / "db"),
        "HttpPort": http, "DicomPort": dimse, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "HttpServerEnabled": True, "SaveJobs": False, "StorageCompression": False,
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Host": "127.0.0.1"},
    }
    path = tmp_path / "orthanc.json"
    path.write_text(json.dumps(config))
    log = (tmp_path / "orthanc.log").open("w")
    proc = subprocess.Popen(["Orthanc", str(path)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http}"
    deadline = time.monotonic() + START_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Orthanc exited: {(tmp_path / 'orthanc.log').read_text()[-2000:]}")
            try:
                if requests.get(url + "/system", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Orthanc did not answer within {START_S} s:\n"
                            f"{(tmp_path / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def negate(pixels: np.ndarray, identity: str) -> np.ndarray:
    return (4095 - pixels).astype(np.float32)


def test_stow_qido_wado_round_trip(tmp_path, orthanc):
    from dicomweb_client.api import DICOMwebClient

    cohort = Cohort(1, 2, seed=31)
    originals = []
    for case in cohort:
        originals.append(tmp_path / "orig" / f"v{case.visit}.dcm")
        write_phantom_dicom(originals[-1], case.image(32), case, cohort, (1.0, 1.0))
        assert requests.post(orthanc + "/instances", data=originals[-1].read_bytes(), timeout=10).ok
    src = [pydicom.dcmread(str(p)) for p in originals]
    client = DICOMwebClient(orthanc + "/dicom-web")

    # the DICOMweb datastore reads the study back with WADO-RS before exporting it
    fetched = []
    for ds in src:
        got = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        fetched.append(tmp_path / "cache" / f"{ds.SOPInstanceUID}.dcm")
        fetched[-1].parent.mkdir(parents=True, exist_ok=True)
        got.save_as(str(fetched[-1]), write_like_original=False)
    summary = export_study_zip(fetched, tmp_path / "anon.zip", DeidOptions(key=KEY), negate, anonymized("full"))
    assert summary.done == 2 and not summary.refused + summary.failed
    stowed = stow_study([tmp_path / "anon.zip"], orthanc + "/dicom-web")
    assert sorted(stowed.study_uids) == sorted(summary.study_uids)

    pseudonym = None
    with zipfile.ZipFile(tmp_path / "anon.zip") as zf:
        exported = {n.split("/")[2][:-4]: pydicom.dcmread(zf.open(n)) for n in zf.namelist()}
    for sop, ds in exported.items():
        studies = client.search_for_studies(search_filters={"StudyInstanceUID": ds.StudyInstanceUID})
        assert len(studies) == 1
        found = pydicom.Dataset.from_json(studies[0])
        assert found.PatientID == ds.PatientID and found.get("StudyDate", "") == ""
        pseudonym = ds.PatientID
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            back = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, sop)
        assert back.SOPInstanceUID == sop and back.PatientIdentityRemoved == "YES"
        np.testing.assert_array_equal(back.pixel_array, ds.pixel_array)
        buf = tmp_path / "back.dcm"
        back.save_as(str(buf), write_like_original=False)
        data = buf.read_bytes()
        for original in src:
            secrets = [original.PatientID, str(original.PatientName).split("^")[0], original.StudyInstanceUID,
                       original.SOPInstanceUID, original.InstitutionName, original.AccessionNumber, original.StudyDate]
            assert not [s for s in secrets if s.encode() in data]
    # the originals are still there, untouched, and the anonymized patient is a different patient
    patients = {s["00100020"]["Value"][0] for s in client.search_for_studies(fields=["PatientID"])}
    assert patients == {src[0].PatientID, pseudonym}
    assert len(client.search_for_studies()) == 4
