"""Helpers for the server tests: a real ``monai-anon serve`` on loopback, Orthanc, a local OpenID issuer
(``tests/openid_issuer.py``), and test images with non-trivial geometry and intensity scales."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests
from openid_issuer import OpenIDIssuer  # noqa: F401  (re-exported for the server tests)

REPO = Path(__file__).resolve().parents[2]
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
START_TIMEOUT_S = 420.0  # a busy 2-core machine imports torch + MONAI Label slowly


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.25, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value (returned) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.0f} s")
        time.sleep(interval)


# -- the server --------------------------------------------------------------------------------------
@dataclass
class Server:
    url: str
    workdir: Path
    studies: str
    proc: subprocess.Popen
    log: Path
    verify: Any = True
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def tmp_dir(self) -> Path:
        return self.workdir / "tmp"

    def request(self, method: str, path: str, **kw) -> requests.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        kw.setdefault("timeout", 300)
        return requests.request(method, self.url + path, headers=headers, verify=self.verify, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.request("POST", path, **kw)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down, the worker pool with it), then SIGKILL if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def start_server(workdir: Path, studies: str | Path, model: Path, *extra: str, scheme: str = "http",
                 verify: Any = True, headers: dict[str, str] | None = None, ready_status: tuple[int, ...] = (200,),
                 env: dict[str, str] | None = None) -> Server:
    """Start ``monai-anon serve`` on a free loopback port and wait until ``/info/`` answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "monai_anon_app.cli", "serve", "--studies", str(studies), "--model", str(model),
           "--workdir", str(workdir), "--port", str(port), "--log-level", "warning", *extra]
    return launch_server(cmd, workdir, port, studies=str(studies), scheme=scheme, verify=verify, headers=headers,
                         ready_status=ready_status, env={**os.environ, **(env or {})})


def launch_server(cmd: list[str], workdir: Path, port: int, *, studies: str = "", cwd: Path = REPO,
                  scheme: str = "http", verify: Any = True, headers: dict[str, str] | None = None,
                  ready_status: tuple[int, ...] = (200,), env: dict[str, str] | None = None) -> Server:
    """Run the server command ``cmd`` (listening on ``port``; its log in ``workdir/server.log``) and wait until
    ``/info/`` answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(c) for c in cmd], stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    server = Server(f"{scheme}://127.0.0.1:{port}", workdir, studies, proc, log, verify, headers or {})

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}:\n{server.log_tail()}")
        try:
            return server.get("/info/", timeout=10).status_code in ready_status
        except requests.RequestException:
            return False

    try:
        wait_until(ready, START_TIMEOUT_S, interval=1.0, what="server start")
    except BaseException:
        server.stop()
        raise
    return server


# -- test data ---------------------------------------------------------------------------------------
def make_study(folder: Path, patients: int = 4, images_per_patient: int = 3, size: int = 128) -> Path:
    """A study folder as ``monai-anon phantoms`` writes it (DICOM DX + labels.csv), plus an oblique NIfTI
    and a 16-bit PNG without labels."""
    from monai_anon_app.data.cohort_writer import write_cohort
    from monai_anon_app.data.phantoms import Cohort

    write_cohort(folder, Cohort(patients, images_per_patient, seed=7), size, "dicom", progress=False)
    write_nifti(folder / "images" / "oblique.nii.gz", smooth_image((96, 80), -1000.0, 1500.0), oblique_affine())
    write_png16(folder / "images" / "radiograph16.png", smooth_image((72, 88), 0.0, 60000.0))
    return folder


def smooth_image(shape: tuple[int, int], lo: float, hi: float, seed: int = 0) -> np.ndarray:
    """A smooth ``(H, W)`` float image spanning about ``lo``..``hi``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    img = np.sin(xx / 7.0) * np.cos(yy / 11.0) + 0.3 * np.exp(-((xx - shape[1] / 2) ** 2 + (yy - shape[0] / 3) ** 2)
                                                             / 200.0)
    img += 0.05 * rng.standard_normal(shape)
    img = (img - img.min()) / (img.max() - img.min())
    return (lo + img * (hi - lo)).astype(np.float32)


def oblique_affine() -> np.ndarray:
    """A rotated, anisotropic, offset NIfTI affine."""
    angle = np.deg2rad(20.0)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([0.7, 1.3, 2.5])
    a[:3, 3] = [-41.5, 12.25, 7.0]
    return a


def write_nifti(path: Path, pixels: np.ndarray, affine: np.ndarray) -> Path:
    """``pixels (H, W)`` as a single-slice NIfTI (axes: column, row, slice) with ``affine``."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(pixels.T[:, :, None]), affine), str(path))
    return path


def write_png16(path: Path, pixels: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.rint(pixels), 0, 65535).astype(np.uint16)).save(path)
    return path


def dicom_variant(src: Path, dst: Path, **attrs: Any) -> Path:
    """A copy of the DICOM file ``src`` with attributes changed (pixel data untouched)."""
    import pydicom

    ds = pydicom.dcmread(str(src))
    for key, value in attrs.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(dst))
    return dst


def identity_seed(server: Server, path: Path, seed: int) -> int:
    """The seed of the synthetic identity the server gives the DICOM file ``path`` for ``seed``, by the
    documented rule (``seed_for(seed, identity key)`` under the server's own key), computed here."""
    import pydicom

    from monai_anon_app.dicom.deidentifier import Deidentifier
    from monai_anon_app.dicom.keys import load_key
    from monai_anon_app.dicom.options import DeidOptions
    from monai_anon_app.inference import seed_for

    key_file = server.workdir / "app" / "deid.key"
    assert key_file.is_file(), "the server makes its key on first use"
    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    return seed_for(seed, Deidentifier(DeidOptions(key=load_key(None, key_file))).identity_key(ds))


def nifti_pixels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(data (W, H, k) float32, affine)`` of a NIfTI file."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 2:
        data = data[:, :, None]
    return data, img.affine


# -- Orthanc -----------------------------------------------------------------------------------------
@dataclass
class Orthanc:
    """A private Orthanc with the DICOMweb plugin: loopback only, no DICOM listener, storage in tmp."""

    folder: Path
    http_port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return self.url + "/dicom-web"

    def start(self) -> Orthanc:
        """Start (or start again, on the same port and storage) the Orthanc process."""
        self.http_port = self.http_port or free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "monai-anon-tests", "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"), "HttpPort": self.http_port,
            "DicomPort": free_port(), "DicomServerEnabled": False, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config, indent=1))
        log = open(self.folder / "orthanc.log", "wb")  # noqa: SIM115 - kept open for the process
        self.proc = subprocess.Popen([ORTHANC, str(path)], stdout=log, stderr=subprocess.STDOUT)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError((self.folder / "orthanc.log").read_text()[-2000:])
            try:
                return requests.get(self.url + "/system", timeout=2).ok
            except requests.RequestException:
                return False

        wait_until(ready, 60, what="Orthanc start")
        return self

    def upload(self, files: list[Path]) -> None:
        for f in files:
            requests.post(self.url + "/instances", data=f.read_bytes(), timeout=30).raise_for_status()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def multipart_parts(response) -> tuple[dict, bytes]:
    """The JSON ``params`` part and the data part of a multipart infer/export answer."""
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    params, data = {}, b""
    for part in MultipartDecoder.from_response(response).parts:
        if b'name="params"' in part.headers[b"Content-Disposition"]:
            params = json.loads(part.content)
        else:
            data = part.content
    return params, data
