"""Every infer task through the official MONAI Label client and through plain HTTP, against the real
server; results compared voxel by voxel (values and geometry) with the inference API in-process."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from peers import require_module
from server_testlib import dicom_variant, identity_seed, nifti_pixels, oblique_affine, wait_until

from monai_anon_app.data.transforms import from_model
from monai_anon_app.inference.anonymizer import redraw_weight

TASKS = ("anonymize", "counterfactual", "explain", "export")


def _first_dicom_id(image_ids: list[str]) -> str:
    return next(i for i in image_ids if i.startswith("PH"))


def _multipart(response) -> tuple[dict, bytes, str]:
    """(params, file bytes, file name) of a multipart/form-data reply."""
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    params, data, name = {}, b"", ""
    for part in MultipartDecoder.from_response(response).parts:
        disposition = part.headers[b"Content-Disposition"].decode()
        if 'name="params"' in disposition:
            params = json.loads(part.content)
        else:
            data, name = part.content, disposition.split('filename="')[1].rstrip('"')
    return params, data, name


def test_info_lists_tasks_with_options_and_classes(server, reference):
    info = server.get("/info/").json()
    classes = reference().classes
    assert set(TASKS) <= set(info["models"])
    for name in TASKS:
        model = info["models"][name]
        assert model["options"] and set(model["config"]) == set(model["options"])
        assert model["labels"] == ([] if name == "export" else classes)
        assert model["model"]["available"] is True
    assert info["models"]["anonymize"]["options"]["mode"]["choices"] == ["full", "residual"]
    assert info["models"]["counterfactual"]["config"]["mode"] == "residual"
    assert {"disentangler", "identity_vae"} <= set(info["trainers"])
    assert set(info["train_stats"]) >= {"disentangler", "identity_vae"}


def test_official_client_drives_every_task(client, image_ids, reference):
    image = _first_dicom_id(image_ids)
    out, params = client.infer("anonymize", image, {"seed": 11})
    data, _ = nifti_pixels(Path(out))
    assert params["seed"] == 11 and params["model_checksum"] == reference().checksum
    assert {"identity_distance", "source_identity_distance", "prediction_before", "prediction_after"} <= set(params)
    assert data.shape == (128, 128, 1) and data.dtype == np.float32

    out, params = client.infer("counterfactual", image, {"target": reference().classes[-1]})
    assert params["target"] == reference().classes[-1] and params["mode"] == "residual"
    assert nifti_pixels(Path(out))[0].shape == (128, 128, 1)

    out, params = client.infer("explain", image, {"k": 2, "seed": 3})
    assert len(params["cases"]) == 2 and set(params["prediction"]) == {"label", "probabilities"}
    assert nifti_pixels(Path(out))[0].shape == (128, 128, 2)

    out, params = client.infer("export", image, {"seed": 3})
    assert params["summary"]["done"] == 1 and len(params["files"]) == 1
    assert zipfile.is_zipfile(out)


@pytest.mark.parametrize("task,params,suffix", [
    ("anonymize", {"seed": 1, "mode": "residual", "candidates": 4}, ".nii"),
    ("counterfactual", {"target": "normal", "mode": "full"}, ".nii"),
    ("explain", {"k": 1}, ".nii"),
    ("export", {"headers_only": True}, ".zip"),
])
def test_plain_http_drives_every_task(server, image_ids, task, params, suffix):
    url = f"/infer/{task}?image={_first_dicom_id(image_ids)}"
    as_json = server.post(url + "&output=json", data={"params": json.dumps(params)})
    assert as_json.status_code == 200, as_json.text
    assert as_json.headers["content-type"].startswith("application/json")
    as_image = server.post(url + "&output=image", data={"params": json.dumps(params)})
    assert as_image.status_code == 200 and len(as_image.content) > 100
    assert (as_image.headers["content-type"] == "application/zip") == (suffix == ".zip")
    both = server.post(url, data={"params": json.dumps(params)})  # no output: MONAI Label's multipart default
    assert both.status_code == 200 and both.headers["content-type"].startswith("multipart/form-data")
    got_params, data, name = _multipart(both)
    assert name.endswith(suffix) and len(data) > 100
    assert set(got_params) == set(as_json.json())


def _expected_affine_from_dicom(ds: pydicom.Dataset) -> np.ndarray:
    """The NIfTI (RAS) affine of a 2D DICOM image with Image Position/Orientation (Patient)."""
    row_mm, col_mm = (float(v) for v in ds.ImagerPixelSpacing)
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * col_mm
    lps[:3, 1] = iop[3:] * row_mm
    lps[:3, 2] = np.cross(iop[:3], iop[3:])
    lps[:3, 3] = [float(v) for v in ds.ImagePositionPatient]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@pytest.fixture
def dicom_inputs(server, tmp_path) -> dict[str, Path]:
    """DICOM variants of a datastore image: rescaled + positioned + oblique, and MONOCHROME1."""
    src = sorted(Path(server.studies, "images").glob("PH*.dcm"))[0]
    return {
        "rescaled-oblique": dicom_variant(src, tmp_path / "oblique.dcm", RescaleSlope=0.5, RescaleIntercept=-1024,
                                          ImagePositionPatient=[12.5, -30.0, 4.0],
                                          ImageOrientationPatient=[0.0, 1.0, 0.0, 0.0, 0.0, -1.0],
                                          ImagerPixelSpacing=[0.8, 0.6], PixelSpacing=[0.8, 0.6]),
        "monochrome1": dicom_variant(src, tmp_path / "mono1.dcm", PhotometricInterpretation="MONOCHROME1",
                                     RescaleSlope=2.0, RescaleIntercept=10.0),
    }


def _reader_pixels(path: Path) -> np.ndarray:
    from monai_anon_app.dicom.pixels import read_dicom_image
    from monai_anon_app.imageio.images import read_image

    return (read_dicom_image(path) if path.suffix == ".dcm" else read_image(path)).pixels


@pytest.mark.parametrize("case", ["nifti-oblique", "png16", "dicom-datastore", "rescaled-oblique", "monochrome1"])
@pytest.mark.parametrize("task", ["anonymize", "counterfactual"])
def test_round_trip_geometry_and_intensity_voxel_by_voxel(server, reference, dicom_inputs, case, task):
    images = Path(server.studies, "images")
    params = {"seed": 11, "mode": "full"} if task == "anonymize" else {"target": "effusion", "mode": "residual"}
    kwargs = {"data": {"params": json.dumps(params)}}
    if case == "nifti-oblique":
        source, query = images / "oblique.nii.gz", "image=oblique"
    elif case == "png16":
        source, query = images / "radiograph16.png", "image=radiograph16"
    elif case == "dicom-datastore":
        source = sorted(images.glob("PH*.dcm"))[0]
        query = f"image={source.name[:-4]}"
    else:
        source, query = dicom_inputs[case], ""
        kwargs["files"] = {"file": (source.name, source.read_bytes(), "application/dicom")}
    r = server.post(f"/infer/{task}?{query}&output=image", **kwargs)
    assert r.status_code == 200, r.text
    out = server.workdir / f"result-{task}-{case}.nii"
    out.write_bytes(r.content)
    data, affine = nifti_pixels(out)

    pixels = _reader_pixels(source)
    model = reference()
    if task == "anonymize":  # a DICOM image's identity follows its patient (docs/rest.md, Seeds)
        seed = identity_seed(server, source, 11) if source.suffix == ".dcm" else 11
        expected = model.anonymize(pixels, seed=seed, mode="full").image
    else:
        expected = model.counterfactual(pixels, target="effusion", mode="residual").image
    assert data.shape[:2] == pixels.T.shape and data.shape[2] == 1
    got = data[:, :, 0].T
    scale = float(np.ptp(pixels)) or 1.0
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * scale)
    # intensity units are the input's (never a uint8 cast, never normalised to [0, 1])
    if task == "anonymize":  # full regeneration spans the input's range
        assert got.min() >= pixels.min() - 0.01 * scale and got.max() <= pixels.max() + 0.01 * scale
        assert np.ptp(got) > 0.2 * scale
    else:  # residual mode: the input plus the model's change, in the input's units, except inside the source's
        # finding, where the model's image is taken (inference.anonymizer.redraw_weight)
        full = model.counterfactual(pixels, target="effusion", mode="full").image
        rec = model.reconstruct(pixels)
        weight = from_model(redraw_weight(model.render_model(model.encode(pixels)).mask)[0], 0.0, 1.0, pixels.shape)
        np.testing.assert_allclose(got, pixels + (full - rec) - weight * (pixels - rec), rtol=0, atol=1e-3 * scale)

    if case == "nifti-oblique":
        np.testing.assert_allclose(affine, oblique_affine(), atol=1e-5)
    elif case == "rescaled-oblique":
        np.testing.assert_allclose(affine, _expected_affine_from_dicom(pydicom.dcmread(str(source))), atol=1e-5)
    else:
        ds_spacing = (1.0, 1.0)
        if source.suffix == ".dcm":
            ds = pydicom.dcmread(str(source), stop_before_pixels=True)
            ds_spacing = tuple(float(v) for v in ds.ImagerPixelSpacing)
        np.testing.assert_allclose(affine, np.diag([-ds_spacing[1], -ds_spacing[0], 1.0, 1.0]), atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ITK's SWIG bindings
def test_itk_reads_the_result_in_the_input_geometry_and_units(server, dicom_inputs):
    """3D Slicer loads DICOM and NIfTI through ITK: the result must overlay the original exactly there."""
    itk = require_module("itk", "pip install -e .[test]")
    for case, source in dicom_inputs.items():
        r = server.post("/infer/anonymize?output=image", data={"params": json.dumps({"seed": 2})},
                        files={"file": (source.name, source.read_bytes())})
        assert r.status_code == 200, r.text
        out = server.workdir / f"itk-{case}.nii"
        out.write_bytes(r.content)
        original, result = itk.imread(str(source)), itk.imread(str(out))
        np.testing.assert_allclose(np.array(result.GetOrigin()), np.array(original.GetOrigin()), atol=1e-4)
        np.testing.assert_allclose(np.array(result.GetSpacing())[:2], np.array(original.GetSpacing())[:2], atol=1e-5)
        np.testing.assert_allclose(itk.array_from_matrix(result.GetDirection()),
                                   itk.array_from_matrix(original.GetDirection()), atol=1e-5)
        # the units the model saw (and the result is in) are the units ITK shows for the original
        itk_pixels = itk.array_from_image(original).astype(np.float32).reshape(_reader_pixels(source).shape)
        np.testing.assert_allclose(_reader_pixels(source), itk_pixels, atol=1e-3)


def test_explain_returns_cases_as_slices_in_json_order(server, image_ids, reference):
    image = _first_dicom_id(image_ids)
    r = server.post(f"/infer/explain?image={image}&output=image", data={"params": json.dumps({"k": 3, "seed": 5})})
    j = server.post(f"/infer/explain?image={image}&output=json", data={"params": json.dumps({"k": 3, "seed": 5})})
    out = server.workdir / "explain.nii"
    out.write_bytes(r.content)
    data, _ = nifti_pixels(out)
    source = next(Path(server.studies, "images").glob(f"{image}.dcm"))
    expected = reference().explain(_reader_pixels(source), k=3, seed=5)
    assert [c["finding"] for c in j.json()["cases"]] == [c.finding for c in expected.cases]
    assert [c["seed"] for c in j.json()["cases"]] == [c.seed for c in expected.cases]
    for k, case in enumerate(expected.cases):
        np.testing.assert_allclose(data[:, :, k].T, case.image, atol=1e-4 * float(np.ptp(case.image) or 1))


def test_counterfactual_towards_a_reference_image(server, image_ids):
    image, other = image_ids[0], image_ids[-1]
    r = server.post(f"/infer/counterfactual?image={image}&output=json", data={"params": json.dumps(
        {"reference": other})})
    assert r.status_code == 200, r.text
    assert r.json()["target"] in r.json()["prediction_before"]["probabilities"]


def _study_files(server) -> set[str]:
    return {str(p.relative_to(server.studies)) for p in Path(server.studies).rglob("*")
            if p.is_file() and p.name not in ("datastore_v2.json", ".lock")}


def test_uploads_are_never_kept(server, dicom_inputs):
    before_ids = set(server.get("/datastore/?output=all").json()["objects"])
    before_files = _study_files(server)
    for source in dicom_inputs.values():
        for task in ("anonymize", "explain", "export"):
            r = server.post(f"/infer/{task}", files={"file": (source.name, source.read_bytes())})
            assert r.status_code == 200, r.text
    r = server.post("/infer/anonymize", files={"file": ("junk.bin", b"definitely not an image")})
    assert r.status_code == 415
    assert set(server.get("/datastore/?output=all").json()["objects"]) == before_ids
    assert _study_files(server) == before_files
    # per-request folders (uploads, results) are removed once the response is sent
    wait_until(lambda: not any(server.tmp_dir.glob("req-*")), 30, what="empty request folder")


def test_session_input(client, server, dicom_inputs):
    source = dicom_inputs["rescaled-oblique"]
    session = client.create_session(str(source))
    session_id = session["session_id"]
    out, params = client.infer("anonymize", "", {"seed": 4}, session_id=session_id)
    assert params["seed"] == 4 and nifti_pixels(Path(out))[0].shape[:2] == (128, 128)
    client.remove_session(session_id)
    r = server.post(f"/infer/anonymize?session_id={session_id}")
    assert r.status_code == 404 and "session" in r.json()["detail"].lower()


def test_export_is_deidentified_and_anonymized(server, image_ids):
    image = _first_dicom_id(image_ids)
    source = pydicom.dcmread(str(next(Path(server.studies, "images").glob(f"{image}.dcm"))))
    for params, pixels_changed in (({"seed": 1}, True), ({"headers_only": True}, False)):
        r = server.post(f"/infer/export?image={image}&output=image", data={"params": json.dumps(params)})
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
            (name,) = zf.namelist()
            ds = pydicom.dcmread(io.BytesIO(zf.read(name)))
        assert str(ds.PatientName) != str(source.PatientName) and ds.PatientID != source.PatientID
        assert ds.StudyInstanceUID != source.StudyInstanceUID and name.startswith(ds.StudyInstanceUID)
        assert (ds.Rows, ds.Columns) == (source.Rows, source.Columns)
        assert (not np.array_equal(ds.pixel_array, source.pixel_array)) == pixels_changed
