"""Every bad input answers 4xx with a one-sentence JSON ``detail``, and the server keeps serving."""

from __future__ import annotations

import json
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from server_testlib import write_nifti, write_png16

from monai_anon_app.imageio.formats import IMAGE_KINDS


def _png(width: int, height: int) -> bytes:
    """A valid 8-bit greyscale PNG of any size, built without allocating its pixels."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    from PIL import Image

    d = tmp_path_factory.mktemp("bad")
    files = {"text": d / "notes.txt", "truncated": d / "cut.png", "volume": d / "volume.nii.gz",
             "nan": d / "nan.nii.gz", "colour": d / "colour.png", "huge": d / "huge.png", "tiny": d / "tiny.png",
             "inf": d / "inf.nii"}
    files["text"].write_text("patient: Jane Doe\n")
    write_png16(d / "ok.png", np.full((64, 64), 1000.0))
    files["truncated"].write_bytes((d / "ok.png").read_bytes()[:50])
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((32, 32, 6), np.float32), np.eye(4)), str(files["volume"]))
    a = np.ones((32, 32), np.float32)
    a[4, 5] = np.nan
    write_nifti(files["nan"], a, np.eye(4))
    a[4, 5] = np.inf
    write_nifti(files["inf"], a, np.eye(4))
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(files["colour"])
    files["huge"].write_bytes(_png(20000, 20000))
    files["big"] = d / "big.png"
    files["big"].write_bytes(_png(4096, 4096))
    write_png16(files["tiny"], np.ones((4, 4)))
    files["misnamed"] = d / "My Scan (copy).png"  # a NIfTI volume under a PNG name, with spaces
    files["misnamed"].write_bytes(files["volume"].read_bytes())
    zips = {"traversal": {"../../etc/cron.d/evil.dcm": b"x"}, "absolute": {"/etc/evil.dcm": b"x"},
            "no dicom": {"notes.txt": b"Jane Doe"}, "bomb": {"zeros.dcm": b"\0" * (17 * 2**20)}}
    for name, members in zips.items():
        files[name] = d / f"{name.replace(' ', '-')}.zip"
        with zipfile.ZipFile(files[name], "w", zipfile.ZIP_DEFLATED) as zf:
            for member, data in members.items():
                zf.writestr(member, data)
    files["broken zip"] = d / "broken.zip"
    files["broken zip"].write_bytes(b"PK\x03\x04" + b"\x00" * 60)
    return files


CASES = [
    # (id, url, form params, upload key, status, words the message must contain)
    ("unknown model", "/infer/segment_everything?image={img}", None, None, 404, ["unknown model"]),
    ("unknown image id", "/infer/anonymize?image=NO_SUCH_IMAGE", None, None, 404, ["not in the datastore"]),
    ("path traversal", "/infer/anonymize?image=..%2F..%2F..%2Fetc%2Fpasswd", None, None, 400, ["not allowed"]),
    ("absolute path id", "/infer/anonymize?image=%2Fetc%2Fpasswd", None, None, 400, ["not allowed"]),
    ("traversal reference", "/infer/counterfactual?image={img}", {"reference": "../x"}, None, 400, ["reference"]),
    ("unknown reference", "/infer/counterfactual?image={img}", {"reference": "nope"}, None, 404, ["reference"]),
    ("malformed params", "/infer/anonymize?image={img}", "{seed: 1", None, 422, ["params", "json"]),
    ("params not an object", "/infer/anonymize?image={img}", "[1, 2]", None, 422, ["json object"]),
    ("unknown option", "/infer/anonymize?image={img}", {"sed": 1}, None, 422, ["unknown option", "sed"]),
    ("bad option type", "/infer/anonymize?image={img}", {"candidates": "many"}, None, 422, ["candidates", "integer"]),
    ("option out of range", "/infer/explain?image={img}", {"k": 0}, None, 422, ["at least 1"]),
    ("bad choice", "/infer/anonymize?image={img}", {"mode": "blur"}, None, 422, ["full, residual"]),
    ("unknown class", "/infer/counterfactual?image={img}", {"target": "fracture"}, None, 422, ["unknown class"]),
    ("target and reference", "/infer/counterfactual?image={img}", {"target": "normal", "reference": "{img}"}, None,
     422, ["exactly one"]),
    ("bad output", "/infer/anonymize?image={img}&output=dicom_seg", None, None, 422, ["output"]),
    ("no input", "/infer/anonymize", None, None, 422, ["image id"]),
    ("bad session id", "/infer/anonymize?session_id=..%2Fx", None, None, 400, ["session id"]),
    ("unknown session", "/infer/anonymize?session_id=abc-123", None, None, 404, ["session"]),
    ("non-image upload", "/infer/anonymize", None, "text", 415, [f"not a {IMAGE_KINDS.lower()}"]),
    ("unreadable upload", "/infer/anonymize", None, "truncated", 422, ["not a readable png"]),
    ("wrong dimensionality", "/infer/anonymize", None, "volume", 422, ["shape", "2d"]),
    ("NaN pixels", "/infer/anonymize", None, "nan", 422, ["nan"]),
    ("Inf pixels", "/infer/explain", None, "inf", 422, ["infinite"]),
    ("colour image", "/infer/anonymize", None, "colour", 422, ["colour"]),
    ("image too large", "/infer/anonymize", None, "huge", 413, ["20000×20000", "largest"]),
    ("image too small", "/infer/anonymize", None, "tiny", 422, ["at least 8×8"]),
    ("explain result too large", "/infer/explain", {"k": 64}, "big", 413, ["fewer cases"]),
    ("export of a PNG", "/infer/export", None, "colour", 415, ["dicom"]),
    ("stow without DICOMweb", "/infer/export?image={img}", {"stow": True}, None, 422, ["dicomweb"]),
    ("CT instead of a radiograph", "/infer/anonymize", None, "ct", 422, ["not a 2d projection radiograph"]),
    # uploads are named as the client named them, never by a file of the server
    ("misnamed upload", "/infer/anonymize", None, "misnamed", 422, ["My Scan (copy).png", "2d"]),
    ("nameless upload", "/infer/anonymize", None, "nameless", 415, ["the uploaded file is not a png"]),
    # several images and zips: export only, zips checked before anything is unpacked
    ("several ids to anonymize", "/infer/anonymize?image={img}&image={img2}", None, None, 422, ["only the export"]),
    ("zip to anonymize", "/infer/anonymize", None, "no dicom", 415, ["no-dicom.zip", "only the export task"]),
    ("zip path traversal", "/infer/export", None, "traversal", 400, ["traversal.zip", "../../etc", "not allowed"]),
    ("zip absolute path", "/infer/export", None, "absolute", 400, ["/etc/evil.dcm", "not allowed"]),
    ("zip bomb", "/infer/export", {"headers_only": True}, "bomb", 413, ["bomb.zip", "16 MiB"]),
    ("zip without DICOM", "/infer/export", None, "no dicom", 415, ["holds no dicom files"]),
    ("broken zip", "/infer/export", None, "broken zip", 422, ["broken.zip", "not a readable zip"]),
]


@pytest.mark.parametrize("name,url,params,upload,status,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_4xx_and_one_sentence(server, image_ids, bad_files, name, url, params, upload, status, words):
    img, img2 = [i for i in image_ids if i.startswith("PH")][:2]
    data = {}
    if params is not None:
        data["params"] = (params if isinstance(params, str) else json.dumps(params)).replace("{img}", img)
    files = None
    if upload == "ct":
        import pydicom.data

        ct = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
        files = {"file": (ct.name, ct.read_bytes())}
    elif upload == "nameless":
        files = {"file": ("", b"no name, and not an image")}
    elif upload:
        files = {"file": (bad_files[upload].name, bad_files[upload].read_bytes())}
    r = server.post(url.replace("{img}", img).replace("{img2}", img2), data=data, files=files)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail.endswith(".") and "\n" not in detail and "Traceback" not in detail
    assert detail.count(". ") == 0, detail  # one sentence
    for word in words:
        assert word.lower() in detail.lower(), detail
    # no file name or path of the server: its folders, its request folders, its name for uploads
    assert str(server.workdir) not in detail and "req-" not in detail and "/tmp" not in detail, detail
    assert not re.search(r"\bupload\.(png|nii|dcm|zip)", detail), detail


TRAIN_CASES = [
    ("unknown trainer", "/train/segmenter", {}, 404, ["unknown trainer"]),
    ("bad option", "/train/disentangler", {"steps": "lots"}, 422, ["steps", "integer"]),
    ("unknown option", "/train/identity_vae", {"epochs": 3}, 422, ["unknown option"]),
    ("bad config", "/train/disentangler", {"config": "../../etc/passwd"}, 422, ["config"]),
    ("malformed body", "/train/disentangler", "not json", 422, ["not valid json"]),
    ("run_sync", "/train/disentangler?run_sync=true", {}, 422, ["run_sync"]),
]


@pytest.mark.parametrize("name,url,body,status,words", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_bad_train_request_gets_4xx(server, name, url, body, status, words):
    if isinstance(body, str):
        r = server.post(url, data=body, headers={"Content-Type": "application/json"})
    else:
        r = server.post(url, json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail.endswith(".")
    for word in words:
        assert word.lower() in detail.lower(), detail


def test_server_keeps_serving_after_bad_input(server, image_ids):
    assert server.proc.poll() is None
    assert server.get("/info/").status_code == 200
    img = next(i for i in image_ids if i.startswith("PH"))
    r = server.post(f"/infer/anonymize?image={img}&output=json", data={"params": json.dumps({"seed": 1})})
    assert r.status_code == 200 and r.json()["seed"] == 1
