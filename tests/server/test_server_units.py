"""Fast checks of the app's building blocks, without a server."""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from monai_anon_app.imageio.formats import IMAGE_KINDS
from monai_anon_app.server.params import Option, parse_options, parse_params_json
from monai_anon_app.server.request_errors import RequestError, sentence


def test_options_are_parsed_strictly():
    opts = (Option("seed", int, None, "", minimum=0, nullable=True), Option("mode", str, "full", "",
                                                                           choices=("full", "residual")))
    assert parse_options(opts, {}) == {"seed": None, "mode": "full"}
    assert parse_options(opts, {"seed": 3.0, "client_id": "slicer"}) == {"seed": 3, "mode": "full"}
    for bad in ({"seed": True}, {"seed": -1}, {"seed": "3"}, {"mode": "x"}, {"mode": None}, {"other": 1}):
        with pytest.raises(RequestError) as e:
            parse_options(opts, bad)
        assert e.value.status == 422 and e.value.message.endswith(".")
    assert parse_params_json("") == {} and parse_params_json('{"a": 1}') == {"a": 1}
    for bad in ("{", "[]", "3", '"x"'):
        with pytest.raises(RequestError):
            parse_params_json(bad)


def test_messages_are_one_sentence():
    assert sentence("unknown class 'x'") == "Unknown class 'x'."
    assert sentence("notes.txt is not an image") == "notes.txt is not an image."
    assert sentence("line one\n  line two.") == "Line one line two."


def test_ids_with_path_components_are_refused():
    from monai_anon_app.server.rest import check_id

    assert check_id("1.2.840.113619.2.55") == "1.2.840.113619.2.55"
    assert check_id("PH000_v01") == "PH000_v01"
    for bad in ("../etc/passwd", "/etc/passwd", "a/b", "a\\b", "..", "~root", "x\x00y", "", "-rf"):
        with pytest.raises(RequestError) as e:
            check_id(bad)
        assert e.value.status == 400


def test_loopback_detection():
    from monai_anon_app.network import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.5.5.5")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.0.2.1")
    assert not is_loopback("no-such-host.invalid")


def test_sniff_format_trusts_content_not_names(tmp_path):
    from server_testlib import make_study, write_nifti, write_png16

    from monai_anon_app.imageio.formats import sniff_format
    from monai_anon_app.server.uploads import upload_suffix

    png = write_png16(tmp_path / "a.png", np.ones((16, 16)))
    nii = write_nifti(tmp_path / "b.nii.gz", np.ones((16, 16), np.float32), np.eye(4))
    study = make_study(tmp_path / "s", patients=2, images_per_patient=1, size=32)
    dcm = next((study / "images").glob("*.dcm"))
    for src, fmt in ((png, "png"), (nii, "nifti"), (dcm, "dicom")):
        renamed = tmp_path / f"upload-{fmt}.bin"
        shutil.copy(src, renamed)
        assert sniff_format(src) == fmt and sniff_format(renamed) == fmt
        assert upload_suffix(renamed, fmt) == {"png": ".png", "nifti": ".nii.gz", "dicom": ".dcm"}[fmt]
    (tmp_path / "x.dcm").write_text("not dicom at all")
    assert sniff_format(tmp_path / "x.dcm") is None


def test_dicom_geometry_affine():
    from monai_anon_app.imageio.geometry import Geometry, plane_affine

    np.testing.assert_allclose(plane_affine((2.0, 3.0)), np.diag([-3.0, -2.0, 1.0, 1.0]))
    # ITK's geometry of a DICOM image with Image Orientation (Patient) 0\1\0\0\0\-1, Imager Pixel Spacing 2\3
    direction = np.array([[0, 1, 0], [0, 0, -1], [-1, 0, 0]], float).T  # columns: row, column, normal cosines
    a = Geometry((5, 4, 1), (3.0, 2.0, 1.0), (10.0, 20.0, 30.0), direction).ras_affine()
    np.testing.assert_allclose(a[:3, 3], [-10, -20, 30])
    np.testing.assert_allclose(a[:3, 0], [0, -3, 0])
    np.testing.assert_allclose(a[:3, 1], [0, 0, -2])


def test_model_store_publishes_atomically(tmp_path, tiny_model):
    from monai_anon_app.server.model_store import ModelStore

    store = ModelStore(tiny_model, tmp_path / "published")
    assert store.current_dir() == tiny_model and store.published() is None
    first = store.checksum()
    staged = store.staging_dir()
    for f in tiny_model.iterdir():
        if f.is_file():
            shutil.copy2(f, staged / f.name)
    (staged / "calibration.json").write_text((tiny_model / "calibration.json").read_text().replace("{", '{"x": 1,', 1))
    target = store.publish(staged)
    assert store.current_dir() == target and not staged.exists()
    assert store.checksum() != first and store.name().endswith(target.name)
    assert store.anonymizer().checksum == store.checksum()
    store.clean_staging()
    assert not list((tmp_path / "published").glob(".staging-*"))
    # a missing model: no crash, a clear reason
    empty = ModelStore(tmp_path / "nothing", tmp_path / "p2")
    assert not empty.available() and empty.describe()["available"] is False
    from monai_anon_app.errors import ModelError

    with pytest.raises(ModelError, match="no trained model"):
        empty.anonymizer()


def test_labels_csv_goes_into_image_info(tmp_path):
    from server_testlib import make_study

    from monai_anon_app.server.datastore import make_local_datastore, training_records

    study = make_study(tmp_path / "study", patients=3, images_per_patient=2, size=32)
    ds = make_local_datastore(str(study), ["*.nii.gz", "*.png"], auto_reload=False, read_only=False)
    with open(study / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(ds.list_images()) == len(rows) + 2  # + the unlabelled NIfTI and PNG
    for row in rows:
        info = ds.get_image_info(Path(row["file"]).name[:-4])
        assert info["patient_id"] == row["patient_id"] and info["finding"] == row["finding"]
    records, skipped = training_records(ds)
    assert len(records) == len(rows) and sorted(skipped) == ["oblique", "radiograph16"]
    assert not (Path(__file__).resolve().parents[2] / "monai_anon_app" / "data" / "sample_study" / "datastore_v2.json"
                ).exists()


def test_serve_without_studies_uses_a_copy_of_the_sample_study(tmp_path):
    from monai_anon_app.server.launch import build_command
    from monai_anon_app.server.workspace import SAMPLE_STUDY, prepare_app_dir, prepare_sample_study

    study = prepare_sample_study(tmp_path)
    assert study.parent == tmp_path and (study / "labels.csv").is_file()
    assert SAMPLE_STUDY not in study.parents
    assert prepare_sample_study(tmp_path) == study  # copied once
    app_dir = prepare_app_dir(tmp_path)
    assert "from monai_anon_app.main import AnonymizationApp" in (app_dir / "main.py").read_text()
    args = argparse.Namespace(conf=[], model=None, workers=None, threads=None, host="127.0.0.1", port=8000,
                              log_level="info", root_path="", ssl_certfile=None, ssl_keyfile=None, ssl_ca_certs=None,
                              auth_realm=None, auth_client_id="monailabel-app")
    cmd, env = build_command(args, app_dir, str(study), tmp_path)
    assert cmd[1:4] == ["-m", "monailabel.main", "start_server"]
    assert cmd[cmd.index("--app") + 1] == str(app_dir)
    assert "use_pretrained_model" in cmd and env["MONAI_LABEL_AUTH_ENABLE"] == "false"


def test_result_nifti_keeps_geometry_and_drops_header_extensions(tmp_path):
    import nibabel as nib
    from server_testlib import oblique_affine, smooth_image

    from monai_anon_app.server.uploads import load_input, write_result

    pixels = smooth_image((40, 56), -500.0, 900.0)
    img = nib.Nifti1Image(np.ascontiguousarray(pixels.T[:, :, None]), oblique_affine())
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"Patient: Jane Doe, MRN 1234"))
    nib.save(img, str(tmp_path / "in.nii"))
    src = load_input(tmp_path / "in.nii", 8192)
    out = write_result(tmp_path / "out.nii", src, [src.image.pixels * 2, src.image.pixels])
    back = nib.load(str(out))
    assert back.shape == (56, 40, 2) and back.get_data_dtype() == np.float32
    np.testing.assert_allclose(back.affine, oblique_affine(), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(back.dataobj)[:, :, 0].T, pixels * 2)
    assert len(back.header.extensions) == 0 and b"Jane Doe" not in out.read_bytes()


def test_missing_model_answers_503_in_process(tmp_path):
    from monai_anon_app.server.infer import AnonymizeTask
    from monai_anon_app.server.model_store import ModelStore
    from monai_anon_app.server.settings import Runtime

    runtime = Runtime.from_conf(tmp_path, {"model": str(tmp_path / "none"), "tmp_dir": str(tmp_path / "tmp")})
    task = AnonymizeTask(ModelStore(runtime.model_base, runtime.publish_root), runtime)
    assert task.info()["model"]["available"] is False and task.info()["labels"] == []
    png = tmp_path / "x.png"
    from server_testlib import write_png16

    write_png16(png, np.full((32, 32), 100.0))
    with pytest.raises(RequestError) as e:
        task({"image": str(png), "seed": 1})
    assert e.value.status == 503 and "no trained model" in e.value.message.lower()
    assert not any((tmp_path / "tmp").glob("req-*"))


def test_one_seed_rule_for_every_image():
    from monai_anon_app.inference import seed_for

    assert seed_for(5, None) == 5  # PNG, NIfTI: no patient, the seed as it is
    assert seed_for(5, "patient-a") == seed_for(5, "patient-a") != seed_for(5, "patient-b")
    assert seed_for(5, "patient-a") != seed_for(6, "patient-a")
    assert 0 <= seed_for(2**31 - 1, "x") < 2**31


def test_uploads_are_named_as_the_client_named_them():
    from monai_anon_app.server.uploads import UPLOAD_NAME, client_name

    assert client_name("My Scan (copy).png") == "My Scan (copy).png"
    assert client_name("C:\\Users\\jane\\IM0001") == "IM0001" and client_name("../../etc/passwd") == "passwd"
    assert client_name("a\nb\x00.dcm") == "ab.dcm" and len(client_name("x" * 500)) == 120
    assert len(client_name("é" * 500).encode()) <= 200  # a valid file name on any file system
    for nameless in (None, "", "..", "dir/", "   "):
        assert client_name(nameless) == UPLOAD_NAME


def _zip(path: Path, members: dict[str, bytes], encrypted: bool = False) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    if encrypted:  # set the "encrypted" flag of the (single) member in its local and central headers
        raw = bytearray(path.read_bytes())
        for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            raw[raw.index(signature) + offset] |= 0x1
        path.write_bytes(bytes(raw))
    return path


def test_zip_uploads_are_unpacked_safely(tmp_path):
    from monai_anon_app.server.uploads import unpack_zip

    ok = _zip(tmp_path / "ok.zip", {"a/IM1": b"1", "b/IM1": b"2", "c.dcm": b"3", "./d": b"4"})
    files = unpack_zip(ok, tmp_path / "out", 1000, "series.zip")
    assert [f.relative_to(tmp_path / "out").as_posix() for f in files] == ["a/IM1", "b/IM1", "c.dcm", "d"]
    cases = [
        ({"../evil": b"x"}, 400, "path traversal"), ({"a/../../evil": b"x"}, 400, "path traversal"),
        ({"/etc/evil": b"x"}, 400, "path traversal"), ({"C:\\evil": b"x"}, 400, "path traversal"),
        ({"a\\..\\..\\evil": b"x"}, 400, "path traversal"), ({"big": b"\0" * 1001}, 413, "unpacks"),
        ({"x": b"1", "x/y": b"2"}, 422, "twice"),
    ]
    for i, (members, status, words) in enumerate(cases):
        with pytest.raises(RequestError) as e:
            unpack_zip(_zip(tmp_path / f"bad{i}.zip", members), tmp_path / f"bad{i}", 1000, "upload.zip")
        assert e.value.status == status and words in e.value.message and "upload.zip" in e.value.message
        assert not (tmp_path / "evil").exists()
    with pytest.raises(RequestError) as e:
        unpack_zip(_zip(tmp_path / "enc.zip", {"x": b"1"}, encrypted=True), tmp_path / "enc", 1000, "s.zip")
    assert e.value.status == 422 and "encrypted" in e.value.message
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(RequestError) as e:
        unpack_zip(tmp_path / "broken.zip", tmp_path / "broken", 1000, "s.zip")
    assert e.value.status == 422 and "not a readable zip" in e.value.message


def test_monai_labels_own_temporary_upload_is_not_named(tmp_path):
    """MONAI Label's own /infer endpoint passes an upload as a temporary file: messages call it "the uploaded
    file", never by that file's name."""
    import tempfile

    from monai_anon_app.server.infer import AnonymizeTask
    from monai_anon_app.server.model_store import ModelStore
    from monai_anon_app.server.settings import Runtime

    runtime = Runtime.from_conf(tmp_path, {"model": str(tmp_path / "none"), "tmp_dir": str(tmp_path / "tmp")})
    task = AnonymizeTask(ModelStore(runtime.model_base, runtime.publish_root), runtime)
    with tempfile.NamedTemporaryFile(suffix=".nii.gz") as upload:
        upload.write(b"patient: Jane Doe")
        upload.flush()
        with pytest.raises(RequestError) as e:
            task({"image": upload.name})
    assert e.value.status == 415 and e.value.message == f"The uploaded file is not a {IMAGE_KINDS} image."


def test_monai_labels_own_infer_endpoint_gets_the_same_refusals(tmp_path):
    """Started without ``monai-anon serve``, MONAI Label would take any existing server path as an image, an
    unknown id as "" (the working folder) and answer an unknown model with a bare 500: the app checks its
    requests and resolves their image first."""
    import tempfile

    from monai_anon_app.server.infer import in_process_request

    image = tmp_path / "PH000_v01.dcm"
    image.write_bytes(b"DICM")

    class Datastore:
        def get_image_uri(self, image_id: str) -> str:
            return str(image) if image_id == "PH000_v01" else ""

    tasks, ds = {"anonymize": object(), "export": object()}, Datastore()
    assert in_process_request(tasks, {"model": "anonymize", "image": "PH000_v01"}, ds)["image"] == str(image)
    for passed in ({"model": "anonymize", "image": str(tmp_path / "s.dcm"), "session": {}},
                   {"model": "export", "image": str(Path(tempfile.gettempdir()) / "tmpab12.dcm")}):
        assert in_process_request(tasks, passed, ds) == passed  # a session file, MONAI Label's own upload
    for request, status, words in (
        ({"model": "segment", "image": "PH000_v01"}, 404, "unknown model 'segment'; the models are anonymize, export"),
        ({"model": "anonymize", "image": "NO_SUCH"}, 404, "image 'NO_SUCH' is not in the datastore"),
        ({"model": "anonymize", "image": "/"}, 400, "not allowed"),
        ({"model": "anonymize", "image": "../../etc/passwd"}, 400, "not allowed"),
        ({"model": "anonymize", "image": str(tmp_path)}, 400, "not allowed"),
    ):
        with pytest.raises(RequestError) as e:
            in_process_request(tasks, request, ds)
        assert e.value.status == status and words.lower() in e.value.message.lower(), e.value.message


def test_a_model_that_does_not_fit_is_named_without_its_server_path(tmp_path, tiny_model):
    import torch

    from monai_anon_app.errors import ModelError
    from monai_anon_app.server.model_store import ModelStore

    old = tmp_path / "old-model"
    shutil.copytree(tiny_model, old)
    state = torch.load(old / "model.pt", weights_only=True)
    state["from_an_older_version.weight"] = torch.zeros(1)
    torch.save(state, old / "model.pt")
    with pytest.raises(ModelError) as e:
        ModelStore(old, tmp_path / "published").anonymizer()
    assert "old-model" in str(e.value) and str(tmp_path) not in str(e.value) and "do not fit" in str(e.value)
