"""The Logic and the client against the real monai-anon MONAI Label app on 127.0.0.1 (see conftest.server)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from CaseAnonymizerLib import (
    COMPARE_LAYOUT_ID,
    EXPLAIN_LAYOUT_ID,
    VIEWS,
    ImageRefusedError,
    ModelNotFoundError,
    ServerClient,
    Upload,
    describe,
)
from conftest import load_dicom, load_png

TIMEOUT = 180


def ijk_to_ras(node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


@pytest.fixture
def connected(logic, server):
    """The logic connected to the server, with consent for this session only."""
    logic.parameters().serverUrl = server.url
    info = logic.checkConnection(timeout=TIMEOUT)
    logic.grantConsent(server.url, remember=False)
    return logic, info


def dicom_files(server) -> list[Path]:
    return sorted((server.studies / "images").glob("*.dcm"))


def test_connection_lists_models_and_classes(logic, server, shim) -> None:
    logic.parameters().serverUrl = server.url
    info = logic.checkConnection(timeout=TIMEOUT)
    raw = requests.get(server.url + "/info/", timeout=30).json()
    assert set(info.models) >= {"anonymize", "counterfactual", "explain", "export"}
    assert info.classes == raw["models"]["counterfactual"]["labels"] and "normal" in info.classes
    assert info.missing_models() == []
    assert "anonymize" in info.summary() and info.classes[0] in info.summary()
    assert logic.urlHistory.urls()[0] == server.url  # remembered in the settings after a successful check
    # the .ui's mode choices are what the server offers
    options = raw["models"]["anonymize"]["options"]
    assert options["mode"]["choices"] == ["full", "residual"], options


def test_anonymize_dicom_phantom(connected, server) -> None:
    import slicer

    logic, _info = connected
    original = load_dicom(dicom_files(server)[0])
    before = np.array(slicer.util.arrayFromVolume(original), dtype=np.float32)
    sh = slicer.mrmlScene.GetSubjectHierarchyNode()
    original_item = sh.GetItemByDataNode(original)
    original_study = sh.GetItemParent(original_item)
    patient_name = sh.GetItemAttribute(sh.GetItemParent(original_study), "DICOM.PatientName")
    assert patient_name

    outcome = logic.anonymize(original, seed=1234, timeout=TIMEOUT)
    anonymized, difference = outcome.nodes
    after = slicer.util.arrayFromVolume(anonymized)
    # geometry and values
    assert after.shape == before.shape and after.dtype == np.float32 and np.isfinite(after).all()
    assert np.allclose(ijk_to_ras(anonymized), ijk_to_ras(original), atol=1e-4)
    assert not np.allclose(after, before)
    assert np.allclose(slicer.util.arrayFromVolume(difference), after - before, atol=1e-3)
    assert 0.2 * before.max() < after.max() < 5 * before.max()  # intensity units of the input, not 0..1 or uint8
    # details
    assert outcome.details["seed"] == 1234
    for key in ("identity_distance", "prediction_before", "prediction_after", "model_checksum"):
        assert key in outcome.details, key
    assert "Synthetic identity seed: 1234" in outcome.summary
    # subject hierarchy: a new anonymized patient/study, nothing of the original's patient data
    study = sh.GetItemParent(sh.GetItemByDataNode(anonymized))
    patient = sh.GetItemParent(study)
    assert (sh.GetItemLevel(patient), sh.GetItemLevel(study)) == ("Patient", "Study")
    assert patient != sh.GetItemParent(original_study)
    assert sh.GetItemAttribute(patient, "DICOM.PatientName").startswith("Anonymous^")
    assert patient_name not in {sh.GetItemAttribute(patient, a) for a in sh.GetItemAttributeNames(patient)}
    assert anonymized.GetAttribute("DICOM.instanceUIDs") is None
    # the original is untouched; the layout shows original | anonymized | difference
    assert np.array_equal(slicer.util.arrayFromVolume(original), before)
    assert sh.GetItemParent(original_item) == original_study
    assert not any(Path(slicer.app.temporaryPath, "CaseAnonymizer").rglob("*"))  # no image left on disk
    assert logic._layoutNode().GetViewArrangement() == COMPARE_LAYOUT_ID
    result_view = slicer.mrmlScene.GetSingletonNode(VIEWS["result"][0], "vtkMRMLSliceNode")
    assert logic._compositeNode(result_view).GetBackgroundVolumeID() == anonymized.GetID()

    # the same seed gives the same synthetic identity; another identity replaces the preview
    again = logic.anonymize(original, seed=1234, timeout=TIMEOUT)
    assert np.allclose(slicer.util.arrayFromVolume(again.nodes[0]), after, atol=1e-4)
    other = logic.runOperation(logic.startAnonymize(original, newIdentity=True), TIMEOUT)
    assert other.details["seed"] != 1234 and logic.parameters().seed == other.details["seed"]
    assert len(logic.outputNodes()) == 2
    assert not np.allclose(slicer.util.arrayFromVolume(other.nodes[0]), after)

    logic.reset()
    assert logic.outputNodes() == [] and logic._outputItems() == []
    assert logic._layoutNode().GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView
    assert slicer.mrmlScene.GetNodeByID(original.GetID()) is not None


def test_anonymize_png_volume(connected, phantoms) -> None:
    import slicer

    logic, _info = connected
    node = load_png(sorted((phantoms["png"] / "images").glob("*.png"))[0])
    outcome = logic.anonymize(node, timeout=TIMEOUT)
    assert slicer.util.arrayFromVolume(outcome.nodes[0]).shape == slicer.util.arrayFromVolume(node).shape
    assert np.allclose(ijk_to_ras(outcome.nodes[0]), ijk_to_ras(node), atol=1e-4)
    assert isinstance(outcome.details["seed"], int)


def test_counterfactual(connected, server) -> None:
    import slicer

    logic, info = connected
    original = load_dicom(dicom_files(server)[1])
    target = info.classes[-1]
    outcome = logic.counterfactual(original, target=target, timeout=TIMEOUT)
    cf, _diff = outcome.nodes
    assert outcome.details["target"] == target and "prediction_after" in outcome.details
    assert slicer.util.arrayFromVolume(cf).shape == slicer.util.arrayFromVolume(original).shape
    assert np.allclose(ijk_to_ras(cf), ijk_to_ras(original), atol=1e-4)
    sh = slicer.mrmlScene.GetSubjectHierarchyNode()
    patient = sh.GetItemParent(sh.GetItemParent(sh.GetItemByDataNode(cf)))
    assert sh.GetItemAttribute(patient, "CaseAnonymizer.IdentityRemoved") == "false"
    assert f"Target: {target}" in outcome.summary
    with pytest.raises(ImageRefusedError, match=r"no-such-class|knows"):
        logic.parameters().target = "no-such-class"
        logic.serverInfo = None  # let the server judge
        logic.counterfactual(original, timeout=TIMEOUT)


def test_explain_cases_are_browsable(connected, server) -> None:
    import slicer

    logic, _info = connected
    original = load_dicom(dicom_files(server)[2])
    outcome = logic.explain(original, k=2, timeout=TIMEOUT)
    assert len(outcome.nodes) == len(outcome.details["cases"]) == 2
    probabilities = outcome.details["prediction"]["probabilities"]
    assert abs(sum(probabilities.values()) - 1.0) < 1e-3
    for node in outcome.nodes:
        assert slicer.util.arrayFromVolume(node).shape == slicer.util.arrayFromVolume(original).shape
    assert not np.allclose(slicer.util.arrayFromVolume(outcome.nodes[0]), slicer.util.arrayFromVolume(outcome.nodes[1]))
    assert logic._layoutNode().GetViewArrangement() == EXPLAIN_LAYOUT_ID
    result_view = slicer.mrmlScene.GetSingletonNode(VIEWS["result"][0], "vtkMRMLSliceNode")
    logic.showCase(2)
    assert logic._compositeNode(result_view).GetBackgroundVolumeID() == outcome.nodes[1].GetID()
    assert "Predicted finding:" in outcome.summary and "Case 2:" in outcome.summary


def _read_pixels(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(str(path))
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return ds.pixel_array.astype(np.float32) * slope + intercept


def test_export_to_folder_and_database(connected, server, tmp_path: Path) -> None:
    import slicer

    logic, _info = connected
    source = dicom_files(server)[0]
    original = load_dicom(source)
    preview = logic.anonymize(original, timeout=TIMEOUT)
    params = logic.parameters()
    params.inputVolume = original
    params.exportFolder = str(tmp_path / "export")
    params.exportToDatabase = True
    imported: list[tuple[str, bool]] = []
    logic.dicomImporter = lambda folder, copy: imported.append((folder, copy))
    plan = logic.planExport()
    assert plan.seed_from_preview and plan.seed == preview.details["seed"] and plan.matches_preview
    assert preview.details["input"]["format"] == "dicom"  # the preview was made from the DICOM file
    text = plan.describe()
    assert str(tmp_path / "export") in text and "DICOM database" in text and server.url in text
    assert "is the anonymized image you saw" in text

    outcome = logic.export(plan, timeout=TIMEOUT)
    files = [Path(f) for f in outcome.files]
    assert files and all(f.is_file() and str(f).startswith(str(tmp_path / "export")) for f in files)
    assert imported == [(str(tmp_path / "export"), False)]
    src = pydicom.dcmread(str(source))
    out = pydicom.dcmread(str(files[0]))
    assert str(out.PatientName) != str(src.PatientName) and out.PatientID != src.PatientID
    assert out.StudyInstanceUID != src.StudyInstanceUID and out.SOPInstanceUID != src.SOPInstanceUID
    assert str(out.get("PatientBirthDate", "")) != str(src.PatientBirthDate)
    assert "Exported 1 file(s)" in outcome.summary
    # pixels went through the model, in the original's units; the export reports the seed it drew from
    assert outcome.details["seed"] == plan.seed
    exported = _read_pixels(files[0])
    shown = slicer.util.arrayFromVolume(preview.nodes[0])[0]
    assert exported.shape == shown.shape
    assert not np.allclose(exported, _read_pixels(source))
    assert 0.2 * _read_pixels(source).max() < exported.max() < 5 * _read_pixels(source).max()
    # and they are the preview's pixels (stored as integers: within one stored value)
    close = np.abs(exported - np.rint(shown)) <= 1.0
    assert close.mean() > 0.99 and np.median(np.abs(exported - shown)) <= 0.5


def test_a_series_is_exported_in_one_request(connected, server, tmp_path: Path) -> None:
    import slicer

    logic, _info = connected
    by_patient: dict[str, list[Path]] = {}
    for path in dicom_files(server):
        by_patient.setdefault(str(pydicom.dcmread(str(path), stop_before_pixels=True).PatientID), []).append(path)
    files = next(f for f in by_patient.values() if len(f) >= 2)[:2]
    node = load_dicom(files[0])
    uids = [str(pydicom.dcmread(str(f), stop_before_pixels=True).SOPInstanceUID) for f in files]
    slicer.dicomDatabase.files[uids[1]] = str(files[1])
    node.SetAttribute("DICOM.instanceUIDs", " ".join(uids))
    sent: list[tuple[str, str]] = []

    class Recording(ServerClient):
        def infer(self, model, params=None, **kwargs):
            sent.append((model, kwargs["upload"].filename))
            return super().infer(model, params, **kwargs)

    logic.clientFactory = Recording
    params = logic.parameters()
    params.inputVolume = node
    params.exportFolder = str(tmp_path)
    plan = logic.planExport()
    assert plan.source_files == [str(f) for f in files] and "2 DICOM file(s)" in plan.describe()
    outcome = logic.export(plan, timeout=TIMEOUT)
    assert sent == [("export", "series.zip")]  # one request, one de-identification pass
    assert "Exported 2 file(s)" in outcome.summary and outcome.warnings == []
    exported = [pydicom.dcmread(f) for f in outcome.files]
    assert len(exported) == 2 and len({str(d.PatientID) for d in exported}) == 1
    assert {str(d.SOPInstanceUID) for d in exported}.isdisjoint(uids)


def test_export_headers_only_keeps_pixels(connected, server, tmp_path: Path) -> None:
    logic, _info = connected
    source = dicom_files(server)[1]
    original = load_dicom(source)
    params = logic.parameters()
    params.inputVolume = original
    params.exportFolder = str(tmp_path)
    params.headersOnly = True
    plan = logic.planExport()
    assert "pixels kept" in plan.describe()
    outcome = logic.export(plan, timeout=TIMEOUT)
    out = Path(outcome.files[0])
    assert np.array_equal(_read_pixels(out), _read_pixels(source))
    assert pydicom.dcmread(str(out)).PatientID != pydicom.dcmread(str(source)).PatientID


def test_refused_image_gives_the_servers_reason(connected) -> None:
    import slicer

    logic, _info = connected
    volume = slicer.util.addVolumeFromArray(np.random.default_rng(0).random((3, 32, 32)).astype(np.float32) * 100,
                                            name="three slices")
    operation = logic.startAnonymize(volume)
    assert operation.job.wait(TIMEOUT)
    with pytest.raises(ImageRefusedError) as info:
        operation.complete()
    sentence = describe(info.value)[0]
    assert sentence.startswith("The server refused the image: ") and "single-slice" in sentence
    assert "\n" not in sentence and logic.outputNodes() == []
    # the server keeps serving
    assert logic.checkConnection(timeout=TIMEOUT).models


def test_unknown_model_and_unreadable_upload(server) -> None:
    client = ServerClient(server.url, read_timeout=TIMEOUT)
    with pytest.raises(ModelNotFoundError) as info:
        client.infer("no-such-model", {}, upload=Upload("image.nii.gz", b"\x00" * 64))
    assert describe(info.value)[0].startswith("The server has no 'no-such-model' model")
    with pytest.raises(ImageRefusedError) as info:
        client.infer("anonymize", {}, upload=Upload("image.png", b"not an image"))
    assert describe(info.value)[0].startswith("The server cannot read the image")


def test_timeout_against_the_real_server(connected, server) -> None:
    """A read timeout shorter than the inference gives the timeout sentence (and the server survives)."""
    logic, _info = connected
    client = ServerClient(server.url, read_timeout=0.001)
    with pytest.raises(Exception) as info:
        client.infer("explain", {"k": 3}, upload=Upload("x.nii.gz", logic.prepareUpload(
            __import__("slicer").util.addVolumeFromArray(np.ones((1, 64, 64), np.float32) * 50)).data))
    assert describe(info.value)[0].startswith(f"The server at {server.url} did not ")
    assert requests.get(server.url + "/info/", timeout=60).status_code == 200


def test_module_self_test_runs_against_the_server(module, server, scene, caplog) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="CaseAnonymizerTest")
    test = module.CaseAnonymizerTest("runTest")
    test.serverUrl = server.url
    test.runTest()
    messages = [r.getMessage() for r in caplog.records]
    for done in ("Parameters, layout and reset: passed", "Message when no server answers: passed",
                 "Server round trip: passed"):
        assert done in messages, messages


def test_details_are_json_in_the_parameter_node(connected, server) -> None:
    logic, _info = connected
    original = load_dicom(dicom_files(server)[0])
    logic.anonymize(original, timeout=TIMEOUT)
    details = json.loads(logic.parameters().anonymizeDetails)
    assert {"seed", "prediction_before", "prediction_after"} <= set(details)


def test_https_is_verified(logic, https_server, tls) -> None:
    """An unknown certificate authority is refused with a one-sentence hint; its CA bundle makes it work."""
    from CaseAnonymizerLib import CertificateError

    params = logic.parameters()
    params.serverUrl = https_server.url
    with pytest.raises(CertificateError) as info:
        logic.checkConnection(timeout=TIMEOUT)
    assert describe(info.value)[0] == (f"The certificate of {https_server.url} could not be verified; if the server "
                                       "uses a private certificate authority, choose its CA bundle in the connection "
                                       "settings.")
    params.caBundle = str(tls.ca)
    info_ok = logic.checkConnection(timeout=TIMEOUT)
    assert "anonymize" in info_ok.models
    assert "not encrypted" not in logic.consentText(https_server.url)
    logic.grantConsent(https_server.url)
    import slicer

    node = slicer.util.addVolumeFromArray(np.ones((1, 32, 32), np.float32) * 100, name="https input")
    outcome = logic.anonymize(node, timeout=TIMEOUT)
    assert slicer.util.arrayFromVolume(outcome.nodes[0]).shape == (1, 32, 32)
