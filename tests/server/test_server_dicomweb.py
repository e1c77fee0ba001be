"""A DICOMweb datastore: the server's studies are a real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``)
started here on loopback only, non-default ports, storage in tmp, with a config file written here."""

from __future__ import annotations

import io
import ipaddress
import json
import socket
import zipfile
from pathlib import Path

import numpy as np
import psutil
import pydicom
import pytest
import requests
from peers import require_orthanc, require_peer
from server_testlib import Orthanc, identity_seed, nifti_pixels, start_server


@pytest.fixture(scope="module", autouse=True)
def orthanc_installed() -> None:
    """Orthanc and its DICOMweb plugin (a skip locally, a failure under CI)."""
    require_orthanc()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, study_template):
    pacs = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    pacs.upload(sorted(Path(study_template, "images").glob("*.dcm")))
    yield pacs
    pacs.stop()


@pytest.fixture(scope="module")
def dw_server(tmp_path_factory, tiny_model, orthanc):
    srv = start_server(tmp_path_factory.mktemp("dicomweb-server") / "work", orthanc.dicomweb, tiny_model,
                       "--workers", "1")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def series(study_template) -> dict[str, Path]:
    """Series Instance UID -> the original file."""
    return {str(pydicom.dcmread(str(p), stop_before_pixels=True).SeriesInstanceUID): p
            for p in sorted(Path(study_template, "images").glob("*.dcm"))}


def _this_machines_address() -> str | None:
    """An IPv4 address of this machine that is not a loopback address."""
    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback:
                return a.address
    return None


def test_orthanc_is_loopback_only(orthanc):
    system = requests.get(orthanc.url + "/system", timeout=30).json()  # what the running Orthanc says
    assert system["HttpPort"] == orthanc.http_port != 8042 and system["DicomPort"] != 4242
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):  # no DICOM listener
        s.settimeout(10)
        s.connect(("127.0.0.1", system["DicomPort"]))
    address = _this_machines_address()
    require_peer(address is not None, "a non-loopback network address on this machine", "a network interface")
    try:  # Orthanc listens on every interface: from anywhere but loopback it must refuse
        status = requests.get(f"http://{address}:{orthanc.http_port}/system", timeout=30).status_code
    except requests.ConnectionError:
        status = None
    assert status in (None, 401, 403), f"Orthanc answered {status} on {address}"


def test_datastore_lists_the_pacs_series(dw_server, series):
    info = dw_server.get("/info/").json()
    assert info["datastore"]["total"] == len(series)
    assert "anonymize" in info["models"]


def test_infer_on_a_series_from_the_pacs(dw_server, series, reference_model):
    uid, path = next(iter(series.items()))
    r = dw_server.post(f"/infer/anonymize?image={uid}&output=image", data={"params": json.dumps({"seed": 8})})
    assert r.status_code == 200, r.text
    out = dw_server.workdir / "dw.nii"
    out.write_bytes(r.content)
    data, affine = nifti_pixels(out)
    from monai_anon_app.dicom.pixels import read_dicom_image

    pixels = read_dicom_image(path).pixels
    assert r.status_code == 200
    expected = reference_model.anonymize(pixels, seed=identity_seed(dw_server, path, 8)).image
    np.testing.assert_allclose(data[:, :, 0].T, expected, atol=1e-5 * float(np.ptp(pixels)))
    spacing = [float(v) for v in pydicom.dcmread(str(path), stop_before_pixels=True).ImagerPixelSpacing]
    np.testing.assert_allclose(np.diag(affine)[:2], [-spacing[1], -spacing[0]], atol=1e-6)


def test_image_info_on_pacs_series_feeds_training_labels(dw_server, series):
    uid = next(iter(series))
    r = dw_server.request("PUT", f"/datastore/image/info?image={uid}",
                          data={"info": json.dumps({"patient_id": "P-DW", "finding": "nodule"})})
    assert r.status_code == 200, r.text
    info = dw_server.get(f"/datastore/image/info?image={uid}").json()
    assert info["patient_id"] == "P-DW" and info["finding"] == "nodule"


def test_unknown_series_is_404(dw_server):
    r = dw_server.post("/infer/anonymize?image=1.2.3.4.5&output=json")
    assert r.status_code == 404 and "not on the DICOMweb server" in r.json()["detail"]


def test_export_stores_the_anonymized_study_back(dw_server, orthanc, series):
    uid, path = next(iter(series.items()))
    original = pydicom.dcmread(str(path))
    r = dw_server.post(f"/infer/export?image={uid}&output=json", data={"params": json.dumps({"seed": 2, "stow": True})})
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["stow"]["ok"] is True and len(result["stow"]["stored"]) == 1
    (study,) = result["stow"]["study_uids"]
    assert study != original.StudyInstanceUID and result["summary"]["done"] == 1
    found = requests.get(f"{orthanc.dicomweb}/studies", params={"StudyInstanceUID": study}, timeout=30).json()
    assert len(found) == 1
    name = found[0].get("00100010", {}).get("Value", [{}])[0].get("Alphabetic", "")
    assert name != str(original.PatientName)
    # and the zip the client gets matches what was stored
    z = dw_server.post(f"/infer/export?image={uid}&output=image", data={"params": json.dumps({"seed": 2})})
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        assert len(zf.namelist()) == 1


@pytest.fixture(scope="module")
def reference_model(tiny_model):
    from monai_anon_app.inference import Anonymizer

    return Anonymizer.load(tiny_model)


def test_a_pacs_failure_keeps_the_export(dw_server, orthanc, series):
    """STOW-RS to a PACS that is down: the zip still comes back (200), the failure is in the JSON."""
    path = next(iter(series.values()))
    orthanc.stop()
    try:
        r = dw_server.post("/infer/export?output=all", data={"params": json.dumps({"seed": 3, "stow": True})},
                           files={"file": ("scan.dcm", path.read_bytes(), "application/dicom")})
    finally:
        orthanc.start()  # on its port again, with its storage: the other tests of the module keep it
    assert r.status_code == 200, r.text
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    parts = {b'name="params"' in p.headers[b"Content-Disposition"]: p.content
             for p in MultipartDecoder.from_response(r).parts}
    result = json.loads(parts[True])
    assert result["summary"]["done"] == 1
    stow = result["stow"]
    assert stow["ok"] is False and stow["url"] == orthanc.dicomweb and "failed" in stow["error"]
    assert stow["error"].endswith(".") and "\n" not in stow["error"]
    with zipfile.ZipFile(io.BytesIO(parts[False])) as zf:
        (name,) = zf.namelist()
        assert pydicom.dcmread(io.BytesIO(zf.read(name))).PatientID != pydicom.dcmread(str(path)).PatientID
