"""The module's Logic against real MRML (slicer-core), without a server."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from CaseAnonymizerLib import (
    COMPARE_LAYOUT_ID,
    EXPLAIN_LAYOUT_ID,
    VIEW_GROUP,
    VIEWS,
    ConsentRequiredError,
    InferResponse,
    InputError,
    ServerFailedError,
    describe,
)
from conftest import load_dicom, load_png


def volume(values: np.ndarray, spacing=(0.5, 0.7, 1.0), name: str = "input"):
    import slicer

    matrix = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    matrix[:3, 3] = (12.0, -3.0, 4.0)
    node = slicer.util.addVolumeFromArray(values.astype(np.float32), ijkToRAS=matrix, name=name)
    return node


def ijk_to_ras(node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def nifti_response(logic, array: np.ndarray, like, params: dict) -> InferResponse:
    """A server-style answer built with Slicer's own NIfTI writer (for tests of the result handling)."""
    import slicer

    node = slicer.vtkMRMLScalarVolumeNode()
    matrix = __import__("vtk").vtkMatrix4x4()
    like.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)
    slicer.util.updateVolumeFromArray(node, array.astype(np.float32))
    upload = logic.prepareUpload(node)
    return InferResponse(model="test", params=params, image=upload.data, image_name="result.nii.gz")


def test_parameter_node_is_a_saved_singleton(logic) -> None:
    import slicer

    params = logic.parameters()
    assert params.node.GetSingletonTag() == "CaseAnonymizer" and params.node.GetSaveWithScene()
    assert logic.parameters().node is params.node
    assert params.serverUrl == "http://127.0.0.1:8000" and params.operationIndex == 0
    assert slicer.mrmlScene.GetNodesByClass("vtkMRMLScriptedModuleNode").GetNumberOfItems() == 1


def test_validate_input_gives_one_sentence(logic) -> None:
    import slicer

    with pytest.raises(InputError, match="Select an input volume"):
        logic.validateInput(None)
    label = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    with pytest.raises(InputError, match="scalar image volume"):
        logic.validateInput(label)
    empty = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="holds no image"):
        logic.validateInput(empty)
    rgb = slicer.util.addVolumeFromArray(np.zeros((1, 4, 4, 3), np.uint8), nodeClassName="vtkMRMLVectorVolumeNode")
    with pytest.raises(InputError, match="colour channels"):
        logic.validateInput(rgb)


def test_upload_is_nifti_in_the_volume_geometry_and_leaves_no_file(logic, tmp_path: Path) -> None:
    import nibabel
    import slicer

    values = np.arange(5 * 7, dtype=np.float32).reshape(1, 5, 7) - 10.5
    node = volume(values)
    upload = logic.prepareUpload(node)
    assert upload.filename == "image.nii.gz" and gzip.decompress(upload.data)[344:348] == b"n+1\x00"
    path = tmp_path / "u.nii.gz"
    path.write_bytes(upload.data)
    image = nibabel.load(path)
    assert np.allclose(image.affine, ijk_to_ras(node))  # NIfTI stores RAS, as Slicer's IJK-to-RAS
    assert np.array_equal(np.asarray(image.dataobj)[:, :, 0].T, values[0])
    assert not any(Path(slicer.app.temporaryPath, "CaseAnonymizer").rglob("*.nii*"))


def test_consent_is_required_before_anything_is_sent(logic, dead_url: str) -> None:
    node = volume(np.ones((1, 8, 8)))
    logic.parameters().serverUrl = dead_url
    logic.parameters().inputVolume = node
    for start in (logic.startAnonymize, logic.startCounterfactual, logic.startExplain):
        with pytest.raises((ConsentRequiredError, InputError)) as info:
            start(node) if start != logic.startCounterfactual else start(node, target="normal")
        assert isinstance(info.value, ConsentRequiredError), describe(info.value)[0]
    assert "until you agree" in describe(info.value)[0]
    text = logic.consentText(dead_url)
    assert dead_url in text and "this computer" in text
    assert "not encrypted" in logic.consentText("http://10.1.2.3:8000")
    assert "not encrypted" not in logic.consentText("https://10.1.2.3:8000")


def test_server_down_gives_the_expected_message(logic, dead_url: str) -> None:
    node = volume(np.ones((1, 8, 8)))
    logic.grantConsent(dead_url)
    logic.parameters().serverUrl = dead_url
    operation = logic.startAnonymize(node)
    assert operation.job.wait(30)
    with pytest.raises(Exception) as info:
        operation.complete()
    assert describe(info.value)[0].startswith(f"Cannot reach the server at {dead_url}")
    assert logic.outputNodes() == []


def test_timeout_gives_the_expected_message(logic, silent_url: str) -> None:
    node = volume(np.ones((1, 8, 8)))
    logic.grantConsent(silent_url)
    params = logic.parameters()
    params.serverUrl = silent_url
    params.timeoutSeconds = 1
    operation = logic.startExplain(node)
    assert operation.job.wait(30)
    with pytest.raises(Exception) as info:
        operation.complete()
    assert describe(info.value)[0] == (f"The server at {silent_url} did not answer within 1 s; it may be busy: "
                                       "try again or raise the timeout.")


def test_cancel_releases_at_once_and_creates_nothing(logic, silent_url: str) -> None:
    from CaseAnonymizerLib import CancelledError

    node = volume(np.ones((1, 8, 8)))
    logic.grantConsent(silent_url)
    logic.parameters().serverUrl = silent_url
    operation = logic.startAnonymize(node)
    operation.job.cancel()
    assert operation.job.finished
    with pytest.raises(CancelledError):
        operation.complete()
    assert logic.outputNodes() == []


def test_anonymize_result_becomes_new_nodes_under_a_new_patient(logic, shim, phantoms) -> None:
    import slicer

    dicom = sorted((phantoms["dicom"] / "images").glob("*.dcm"))[0]
    original = load_dicom(dicom)
    before = np.array(slicer.util.arrayFromVolume(original))
    sh = slicer.mrmlScene.GetSubjectHierarchyNode()
    original_item = sh.GetItemByDataNode(original)
    original_patient = sh.GetItemParent(sh.GetItemParent(original_item))
    result = before + 5.0
    response = nifti_response(logic, result, original, {"seed": 77, "identity_distance": 0.4})
    outcome = logic._finishAnonymize(original, response)
    anonymized, difference = outcome.nodes
    assert np.allclose(slicer.util.arrayFromVolume(anonymized), result)
    assert np.allclose(ijk_to_ras(anonymized), ijk_to_ras(original))
    assert np.allclose(slicer.util.arrayFromVolume(difference), 5.0)
    study = sh.GetItemParent(sh.GetItemByDataNode(anonymized))
    patient = sh.GetItemParent(study)
    assert sh.GetItemLevel(study) == "Study" and sh.GetItemLevel(patient) == "Patient"
    assert patient != original_patient
    original_values = {sh.GetItemAttribute(original_patient, a) for a in sh.GetItemAttributeNames(original_patient)
                       if a.startswith("DICOM.")} - {""}
    phantom = pydicom.dcmread(str(dicom), stop_before_pixels=True)
    family_name, patient_id = phantom.PatientName.family_name, str(phantom.PatientID)
    assert family_name and {str(phantom.PatientName), patient_id} <= original_values  # the phantom's fake patient
    for item in (patient, study):
        for name in sh.GetItemAttributeNames(item):
            assert sh.GetItemAttribute(item, name) not in original_values, name
        assert sh.GetItemName(item) not in original_values
    assert anonymized.GetAttribute("DICOM.instanceUIDs") is None
    assert family_name not in anonymized.GetName() and patient_id not in anonymized.GetName()
    assert "seed 77" in anonymized.GetName()
    # the difference map reveals the original: it stays beside the original, not in the anonymized study
    assert sh.GetItemParent(sh.GetItemParent(sh.GetItemByDataNode(difference))) == sh.GetItemParent(original_item)
    assert np.array_equal(slicer.util.arrayFromVolume(original), before)
    params = logic.parameters()
    assert params.anonymizedVolume.GetID() == anonymized.GetID() and json.loads(params.anonymizeDetails)["seed"] == 77
    # another identity replaces the previous preview
    again = logic._finishAnonymize(original, nifti_response(logic, result, original, {"seed": 78}))
    assert slicer.mrmlScene.GetNodeByID(anonymized.GetID()) is None
    assert {n.GetID() for n in logic.outputNodes()} == {n.GetID() for n in again.nodes}


def test_comparison_layout_links_slices_and_window_level(logic) -> None:
    import slicer

    layout = logic._layoutNode()
    assert layout.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView
    original = volume(np.random.default_rng(0).random((1, 16, 16)) * 100)
    original.GetDisplayNode().SetAutoWindowLevel(False)
    original.GetDisplayNode().SetWindowLevel(80, 40)
    result = volume(np.random.default_rng(1).random((1, 16, 16)) * 100, name="result")
    matrix = __import__("vtk").vtkMatrix4x4()
    original.GetIJKToRASMatrix(matrix)
    diff = logic._difference(original, slicer.util.arrayFromVolume(result), matrix, "d")
    logic.showComparison(original, result, diff)
    assert layout.GetViewArrangement() == COMPARE_LAYOUT_ID
    shown = {}
    for role in ("original", "result", "difference"):
        slice_node = slicer.mrmlScene.GetSingletonNode(VIEWS[role][0], "vtkMRMLSliceNode")
        assert slice_node is not None and slice_node.GetViewGroup() == VIEW_GROUP
        composite = logic._compositeNode(slice_node)
        assert composite.GetLinkedControl()
        shown[role] = composite.GetBackgroundVolumeID()
    assert shown == {"original": original.GetID(), "result": result.GetID(), "difference": diff.GetID()}
    offsets = {slicer.mrmlScene.GetSingletonNode(VIEWS[r][0], "vtkMRMLSliceNode").GetSliceOffset() for r in VIEWS}
    assert len(offsets) == 1  # same slice position in all three views
    # window/level: the result takes the original's, and changes propagate both ways
    assert (result.GetDisplayNode().GetWindow(), result.GetDisplayNode().GetLevel()) == (80, 40)
    result.GetDisplayNode().SetWindowLevel(50, 10)
    assert (original.GetDisplayNode().GetWindow(), original.GetDisplayNode().GetLevel()) == (50, 10)
    assert diff.GetDisplayNode().GetLevel() == 0.0  # the difference map keeps its own symmetric window
    logic.reset()
    assert layout.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView
    original.GetDisplayNode().SetWindowLevel(30, 5)  # unlinked after reset: nothing else changes
    assert logic.outputNodes() == [] and slicer.mrmlScene.GetNodeByID(diff.GetID()) is None


def test_explain_cases_are_browsable(logic) -> None:
    import slicer

    original = volume(np.zeros((1, 8, 8)))
    cases = np.stack([np.full((8, 8), float(i)) for i in range(3)])
    details = {"prediction": {"label": "normal", "probabilities": {"normal": 0.6, "effusion": 0.4}},
               "cases": [{"finding": f, "distance": 1.0 + i, "seed": i} for i, f in
                         enumerate(["normal", "effusion", "normal"])]}
    source = volume(cases, name="k slices")
    outcome = logic._finishExplain(original, nifti_response(logic, cases, source, details))
    slicer.mrmlScene.RemoveNode(source)
    assert len(outcome.nodes) == 3 and "Similar case 2: effusion" in outcome.nodes[1].GetName()
    for i, node in enumerate(outcome.nodes):
        assert slicer.util.arrayFromVolume(node).shape == (1, 8, 8)
        assert np.allclose(slicer.util.arrayFromVolume(node), i)
        assert np.allclose(ijk_to_ras(node), ijk_to_ras(original))
    assert logic._layoutNode().GetViewArrangement() == EXPLAIN_LAYOUT_ID
    result_view = slicer.mrmlScene.GetSingletonNode(VIEWS["result"][0], "vtkMRMLSliceNode")
    assert logic._compositeNode(result_view).GetBackgroundVolumeID() == outcome.nodes[0].GetID()
    logic.showCase(3)
    assert logic._compositeNode(result_view).GetBackgroundVolumeID() == outcome.nodes[2].GetID()
    assert logic.parameters().currentCase == 3
    assert "Predicted finding: normal (60 %)" in outcome.summary and "effusion 40 %" in outcome.summary


def test_wrong_sized_result_is_reported(logic) -> None:
    original = volume(np.zeros((1, 8, 8)))
    other = volume(np.zeros((1, 4, 4)), name="small")
    with pytest.raises(ServerFailedError, match="size 4 x 4 x 1 for an input of size 8 x 8 x 1"):
        logic._finishAnonymize(original, nifti_response(logic, np.zeros((1, 4, 4)), other, {"seed": 1}))
    assert logic.outputNodes() == [] and logic.parameters().anonymizedVolume is None


def test_export_needs_a_dicom_series(logic, phantoms, tmp_path: Path) -> None:
    png = sorted((phantoms["png"] / "images").glob("*.png"))[0]
    node = load_png(png)
    params = logic.parameters()
    params.inputVolume = node
    params.exportFolder = str(tmp_path)
    with pytest.raises(InputError, match="Export needs a volume loaded from Slicer's DICOM database"):
        logic.planExport()
    assert "preview only" in logic.describeInput(node)
    dicom = load_dicom(sorted((phantoms["dicom"] / "images").glob("*.dcm"))[0])
    params.inputVolume = dicom
    assert "export available" in logic.describeInput(dicom)
    params.exportFolder = ""
    with pytest.raises(InputError, match="Choose the folder"):
        logic.planExport()
    params.exportToFolder = False
    with pytest.raises(InputError, match="Choose where"):
        logic.planExport()
    params.exportToDatabase = True
    params.retainFullDates = True
    params.retainModifiedDates = True
    with pytest.raises(InputError, match="exclude each other"):
        logic.planExport()
    params.retainFullDates = False
    plan = logic.planExport()
    assert plan.source_files == [str(sorted((phantoms["dicom"] / "images").glob("*.dcm"))[0])]
    assert plan.folder is None and plan.to_database and not plan.seed_from_preview


def test_anonymize_sends_the_dicom_file_so_the_preview_is_the_export(logic, phantoms) -> None:
    dicom = sorted((phantoms["dicom"] / "images").glob("*.dcm"))[0]
    upload = logic.previewUpload(load_dicom(dicom))
    assert (upload.filename, upload.data, upload.content_type) == (dicom.name, dicom.read_bytes(), "application/dicom")
    png = logic.previewUpload(load_png(sorted((phantoms["png"] / "images").glob("*.png"))[0]))
    assert png.filename == "image.nii.gz"  # no DICOM file: the pixels only


def test_export_repeats_the_preview_and_survives_a_pacs_failure(logic, phantoms, tmp_path: Path) -> None:
    import io
    import zipfile

    source = sorted((phantoms["dicom"] / "images").glob("*.dcm"))[0]
    original = load_dicom(source)
    params = logic.parameters()
    params.inputVolume = original
    params.exportFolder = str(tmp_path / "out")
    params.exportToPacs = True
    preview = {"seed": 77, "identity_seed": 1234, "candidates": 4, "mode": "residual", "input": {"format": "dicom"}}
    logic._finishAnonymize(original, nifti_response(logic, np.array(__import__("slicer").util.arrayFromVolume(
        original)) + 1.0, original, preview))
    plan = logic.planExport()
    assert (plan.seed, plan.candidates, plan.mode, plan.matches_preview) == (77, 4, "residual", True)
    assert plan.params()["seed"] == 77 and "is the anonymized image you saw" in plan.describe()
    # the server exported the study but the PACS refused it: the folder is still written, the reason shown
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.write(source, "1.2.3/4.5.6/7.8.9.dcm")
    error = "STOW-RS to http://127.0.0.1:9/dicom-web failed: connection refused."
    details = {"files": ["1.2.3/4.5.6/7.8.9.dcm"], "study_uids": ["1.2.3"], "seed": 77,
               "summary": {"done": 1, "refused": [], "skipped": [], "failed": []},
               "stow": {"ok": False, "url": "http://127.0.0.1:9/dicom-web", "error": error}}
    outcome = logic._finishExport(plan, InferResponse("export", details, buffer.getvalue(), "study.zip"))
    assert [Path(f).name for f in outcome.files] == ["7.8.9.dcm"] and Path(outcome.files[0]).is_file()
    assert outcome.warnings == [f"The PACS did not take the study: {error}"]
    assert "Written to" in outcome.summary and "PACS: not stored" in outcome.summary


def test_reset_removes_only_module_outputs(logic) -> None:
    import slicer

    original = volume(np.zeros((1, 8, 8)))
    mine = logic._addVolume(np.ones((1, 8, 8)), __import__("vtk").vtkMatrix4x4(), "out",
                            logic._newSubject("Anonymous X", "Study", True, "X"), original)
    mine_id = mine.GetID()
    sh = slicer.mrmlScene.GetSubjectHierarchyNode()
    original_item = sh.CreateItem(sh.GetSceneItemID(), original)  # the user's data, in the data tree
    assert logic.outputNodes() == [mine] and original_item and logic._outputItems()
    logic.reset()
    assert logic.outputNodes() == [] and logic._outputItems() == []
    assert slicer.mrmlScene.GetNodeByID(mine_id) is None
    assert slicer.mrmlScene.GetNodeByID(original.GetID()) is original
    assert sh.GetItemByDataNode(original) == original_item  # the user's own data keeps its place
