"""Detached NRRD and MetaImage headers: ITK opens whatever file such a header names (absolute or ``../`` paths,
lists), so a 64-byte upload could make the server return any file it can read (its de-identification key) as
pixels. The server refuses them before ITK reads anything; the command line (a user's own files) reads them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from imageio_testlib import oblique_direction, smooth, write_slicer_nrrd, write_with_itk

from monai_anon_app.imageio.formats import sniff_format
from monai_anon_app.imageio.images import read_image
from monai_anon_app.imageio.itkio import HEADER_LIMIT, detached_data_file
from monai_anon_app.server.request_errors import RequestError
from monai_anon_app.server.uploads import load_input

pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__:DeprecationWarning")  # ITK's SWIG

SIDE = 64
_NRRD = "NRRD0004\ntype: uint8\ndimension: 2\nsizes: 64 64\nencoding: raw\n"
_META = "ObjectType = Image\nNDims = 2\nDimSize = 64 64\nElementType = MET_UCHAR\n"


def _secret(folder: Path) -> tuple[Path, bytes]:
    """A file the server can read and must never return: 64×64 bytes, a header's worth of uint8 pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    data = (np.arange(SIDE * SIDE) * 7 % 251).astype(np.uint8).tobytes()
    path = folder / "deid.key"
    path.write_bytes(data)
    return path, data


def _climb(secret: Path) -> str:
    """``secret`` as a ``../`` path that reaches it from any folder (enough ``..`` to climb to ``/``)."""
    return "../" * 40 + str(secret.resolve()).lstrip("/")


def _headers(secret: Path) -> dict[str, bytes]:
    """Detached headers naming ``secret`` (a sibling ``../deid.key`` of their own folder for the relative ones)."""
    return {
        "nrrd data file absolute": f"{_NRRD}data file: {secret}\n\n".encode(),
        "nrrd datafile relative": f"{_NRRD}datafile: ../{secret.name}\n\n".encode(),
        "nrrd datafile climbing": f"{_NRRD}datafile: {_climb(secret)}\n\n".encode(),
        "nrrd data file LIST": f"{_NRRD}data file: LIST\n{secret}\n".encode(),
        "nrrd data file pattern": f"{_NRRD}data file: {secret.parent}/deid.%d 0 0 1\n\n".encode(),
        "nrrd crlf upper case": f"{_NRRD}DATA FILE: {secret}\r\n\r\n".encode().replace(b"\n", b"\r\n", 5),
        "mha ElementDataFile absolute": f"{_META}ElementDataFile = {secret}\n".encode(),
        "mha ElementDataFile relative": f"{_META}ElementDataFile = ../{secret.name}\n".encode(),
        "mha ElementDataFile climbing": f"{_META}ElementDataFile = {_climb(secret)}\n".encode(),
        "mha ElementDataFile LIST": f"{_META}ElementDataFile = LIST\n{secret}\n".encode(),
        # MetaIO does not read by lines: a key without a separator takes its value from the next line, so the
        # LOCAL line below is the value of "X" and the second ElementDataFile the one MetaIO uses
        "mha LOCAL hidden after a bare key": f"{_META}X\nElementDataFile = LOCAL\nElementDataFile = {secret}\n"
                                             .encode(),
        "mha key ended by CR": f"{_META}ElementDataFile\r= {secret}\n".encode(),
        "mha key cut by NUL": f"{_META}ElementDataFile\0 = LOCAL\nElementDataFile = {secret}\n".encode(),
        "mha no ElementDataFile": _META.encode(),
    }


def test_itk_would_read_the_file_a_detached_header_names(tmp_path):
    """Why the server refuses them: read through ITK (as the command line does), these headers return the
    secret's bytes as pixels."""
    secret, data = _secret(tmp_path)
    headers = _headers(secret)
    for name in ("nrrd data file absolute", "nrrd datafile relative", "nrrd datafile climbing",
                 "mha ElementDataFile absolute", "mha ElementDataFile relative", "mha LOCAL hidden after a bare key",
                 "mha key ended by CR"):
        header = tmp_path / "uploads" / name.replace(" ", "-")
        header.parent.mkdir(exist_ok=True)
        header.write_bytes(headers[name])  # in tmp_path/uploads: ../deid.key is the secret
        assert read_image(header).pixels.astype(np.uint8).tobytes() == data, name


def test_detached_data_file_tells_headers_from_their_text(tmp_path):
    secret, _ = _secret(tmp_path)
    for name, header in _headers(secret).items():
        path = tmp_path / "h" / name.replace(" ", "-")
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(header)
        fmt = sniff_format(path)
        assert fmt == name.split()[0], name
        assert detached_data_file(path, fmt), name
    pixels = smooth((24, 20), 0.0, 900.0)
    attached = {
        "nrrd": write_with_itk(tmp_path / "a.nrrd", pixels[None], (0.5, 0.7, 1.0), (1, 2, 3), oblique_direction()),
        "mha": write_with_itk(tmp_path / "a.mha", pixels[None], (0.5, 0.7, 1.0), (1, 2, 3), oblique_direction()),
        "slicer": write_slicer_nrrd(tmp_path / "s.nrrd", pixels, (0.5, 0.7), (0, 0, 0), oblique_direction()),
        "by hand": (tmp_path / "h.nrrd", f"{_NRRD}# data file: x\n\n".encode() + bytes(SIDE * SIDE)),
        "by hand mha": (tmp_path / "h.mha", f"{_META}ElementDataFile = LOCAL\r\n".encode() + bytes(SIDE * SIDE)),
    }
    for name, item in attached.items():
        if isinstance(item, tuple):
            item[0].write_bytes(item[1])
            item = item[0]
        fmt = sniff_format(item)
        assert fmt in ("nrrd", "mha") and not detached_data_file(item, fmt), name
        assert read_image(item).pixels.shape in ((20, 24), (24, 20), (SIDE, SIDE)), name
    for suffix in (".nhdr", ".mhd"):  # what ITK writes under a detached name
        path = write_with_itk(tmp_path / suffix[1:] / f"d{suffix}", pixels[None], (1, 1, 1), (0, 0, 0), np.eye(3))
        assert detached_data_file(path, sniff_format(path)), suffix
    endless = tmp_path / "endless.nrrd"
    endless.write_bytes(_NRRD.encode() + b"# padding\n" * (HEADER_LIMIT // 10 + 1))
    assert detached_data_file(endless, "nrrd")  # a header that does not end within the limit: cannot tell
    assert not detached_data_file(attached["mha"], "png") and detached_data_file(tmp_path / "missing", "nrrd")


def test_load_input_refuses_detached_headers(tmp_path):
    secret, data = _secret(tmp_path / "app")
    for name, header in _headers(secret).items():
        request = tmp_path / "app" / "requests" / name.replace(" ", "-")  # the secret: ../../deid.key from here
        request.mkdir(parents=True)
        upload = request / "upload"
        upload.write_bytes(header.replace(b"../deid.key", b"../../deid.key"))
        with pytest.raises(RequestError) as e:
            load_input(upload, 8192, scratch=request, name="scan.nhdr")
        message = e.value.message
        assert e.value.status == 422 and message.startswith("scan.nhdr is a "), (name, message)
        assert "does not hold its pixel data itself; only single-file" in message, (name, message)
        assert message.count(". ") == 0, (name, message)  # one sentence
        assert str(tmp_path) not in message and "deid" not in message and "upload" not in message, (name, message)
    # the same headers read as the command line reads them would have leaked the key: never through load_input
    assert data not in b"".join(p.read_bytes() for p in (tmp_path / "app" / "requests").rglob("*") if p.is_file())


def test_server_refuses_detached_uploads_and_never_returns_the_secret(server, tmp_path):
    secret, data = _secret(tmp_path / "server-secret")
    for name, header in _headers(secret).items():
        if "relative" in name:  # relative to the server's private upload folder: the climbing ones reach it
            continue
        for output in ("image", "json", "all"):
            r = server.post(f"/infer/anonymize?output={output}", data={"params": json.dumps({"seed": 1})},
                            files={"file": ("scan.nhdr", header, "application/octet-stream")})
            assert r.status_code == 422, (name, output, r.status_code, r.text[:300])
            assert data not in r.content and data[:64] not in r.content, (name, output)
            detail = r.json()["detail"]
            assert detail.startswith("scan.nhdr is a ") and "single-file" in detail, (name, detail)
            assert str(secret.parent) not in detail, (name, detail)
            assert str(server.workdir) not in detail, (name, detail)
    # the export task (DICOM only) and a second try of a refused header: the server keeps serving
    r = server.post("/infer/export?output=json", data={"params": json.dumps({"seed": 1})},
                    files={"file": ("scan.mhd", _headers(secret)["mha ElementDataFile absolute"], "text/plain")})
    assert r.status_code == 415 and data not in r.content, r.text[:300]
    assert server.get("/info/").status_code == 200
