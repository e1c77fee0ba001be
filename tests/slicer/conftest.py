"""Fixtures for the Slicer extension tests: the MRML shim, phantom data, a tiny model and the real server.

The server fixture starts the real MONAI Label app (``monai-anon serve``) on 127.0.0.1 with a tiny model
trained once per code version (cached in pytest's cache folder; set ``CASE_ANONYMIZER_TEST_MODEL`` to a
model folder to skip training).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from openid_issuer import OpenIDIssuer

REPO = Path(__file__).resolve().parents[2]
EXTENSION = REPO / "slicer_extension"
MODULE_DIR = EXTENSION / "CaseAnonymizer"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "CaseAnonymizer.ui"
BIN = Path(sys.executable).parent
MONAI_ANON = BIN / "monai-anon"
TINY_CONFIG = REPO / "monai_anon_app" / "training" / "configs" / "tiny.yaml"

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))


def _import_slicer_core() -> None:
    """Import slicer-core's ``slicer`` package without this test folder.

    ``slicer/__init__.py`` extends its ``__path__`` with every ``slicer`` folder on ``sys.path`` and imports
    all modules found there. Once ``tests/`` is on ``sys.path`` (pytest puts it there for
    ``tests/conftest.py``), that would import this folder's test modules as ``slicer.*``.
    """
    if "slicer" in sys.modules:
        return
    saved = list(sys.path)
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if (Path(p or ".").resolve() / "slicer") != here]
    try:
        import slicer  # noqa: F401
    finally:
        sys.path[:] = saved


_import_slicer_core()


# -- the shim and a fresh scene per test --
@pytest.fixture(scope="session")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import slicer_shim

    slicer_shim.install(str(tmp_path_factory.mktemp("slicer-temp")))
    return slicer_shim


@pytest.fixture
def scene(shim: Any) -> Any:
    """A new MRML scene (Slicer's start-up logics attached), fresh settings and no consent."""
    import slicer
    from CaseAnonymizerLib import ConsentStore

    shim.QSettings.store.clear()
    ConsentStore.forget_session()
    slicer.dicomDatabase = shim.DicomDatabase()
    return shim.new_scene()


@pytest.fixture
def module(shim: Any) -> Any:
    """The ``CaseAnonymizer`` module (imported after the shim)."""
    import CaseAnonymizer

    return CaseAnonymizer


@pytest.fixture
def logic(scene: Any, module: Any, shim: Any) -> Any:
    logic = module.CaseAnonymizerLogic(settings=shim.QSettings())
    yield logic
    logic.windowLevelLink.clear()


# -- loading images the way Slicer does --
def load_png(path: Path, name: str = "png image") -> Any:
    """A PNG as Slicer loads it: a single-slice volume, 1 mm pixels, LPS-to-RAS flipped axes."""
    import slicer
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("F"), dtype=np.float32)
    return slicer.util.addVolumeFromArray(pixels[np.newaxis], ijkToRAS=np.diag([-1.0, -1.0, 1.0, 1.0]), name=name)


def load_dicom(path: Path, name: str = "1: PA") -> Any:
    """A DICOM file as Slicer's DICOM module loads it: ITK reader, ``DICOM.instanceUIDs``, patient/study/series
    items carrying the DICOM patient data, and the file registered in ``slicer.dicomDatabase``."""
    import pydicom
    import slicer

    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)
    assert storage.ReadData(node), f"ITK could not read {path}"
    node.CreateDefaultDisplayNodes()
    node.SetAttribute("DICOM.instanceUIDs", str(ds.SOPInstanceUID))
    slicer.dicomDatabase.files[str(ds.SOPInstanceUID)] = str(path)
    sh = slicer.mrmlScene.GetSubjectHierarchyNode()
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), str(ds.PatientName))
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        sh.SetItemAttribute(patient, f"DICOM.{key}", str(ds.get(key, "")))
    study = sh.CreateStudyItem(patient, str(ds.get("StudyDescription", "study")))
    sh.SetItemAttribute(study, "DICOM.StudyInstanceUID", str(ds.StudyInstanceUID))
    sh.SetItemAttribute(study, "DICOM.StudyDate", str(ds.get("StudyDate", "")))
    item = sh.CreateItem(study, node)
    sh.SetItemUID(item, "DICOM", str(ds.SeriesInstanceUID))
    return node


# -- data --
def _run(cmd: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, **kwargs)


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Phantom cohorts written by ``monai-anon phantoms``: DICOM (with fake patient headers) and PNG."""
    out: dict[str, Path] = {}
    for fmt, patients in (("dicom", 3), ("png", 2)):
        folder = tmp_path_factory.mktemp(f"phantoms-{fmt}")
        result = _run([str(MONAI_ANON), "phantoms", str(folder), "--patients", str(patients),
                       "--images-per-patient", "2", "--seed", "7", "--size", "64", "--format", fmt,
                       "--no-progress"], 300)
        assert result.returncode == 0, result.stderr
        out[fmt] = folder
    return out


def _code_key() -> str:
    digest = hashlib.sha256(TINY_CONFIG.read_bytes())
    for sub in ("networks", "training", "inference", "data"):
        for f in sorted((REPO / "monai_anon_app" / sub).rglob("*.py")):
            digest.update(f.name.encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def tiny_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder from ``monai-anon train --config tiny.yaml`` (cached per code version)."""
    given = os.environ.get("CASE_ANONYMIZER_TEST_MODEL")
    if given:
        return Path(given)
    config_cache = getattr(request.config, "cache", None)  # absent with -p no:cacheprovider
    cache = Path(config_cache.mkdir("slicer-tiny-models")) if config_cache else tmp_path_factory.mktemp("models")
    model = cache / _code_key() / "tiny"
    if not (model / "model.pt").is_file():
        shutil.rmtree(model.parent, ignore_errors=True)
        result = _run([str(MONAI_ANON), "train", str(model), "--config", str(TINY_CONFIG), "--no-progress"], 900)
        assert result.returncode == 0, f"training the tiny model failed:\n{result.stderr[-3000:]}"
    return model


# -- servers --
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path
    studies: Path
    model: Path

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def _serve(work: Path, studies: Path, model: Path, scheme: str, extra: list[str],
           verify: bool | str = True, ready_status: int = 200) -> Iterator[Server]:
    """Start ``monai-anon serve`` on loopback, wait until ``/info/`` answers ``ready_status``, yield it, stop it."""
    port = free_port()
    log = work / "server.log"
    env = {**os.environ, "MONAI_ANON_MODELS": str(model.parent), "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(MONAI_ANON), "serve", "--studies", str(studies), "--host", "127.0.0.1", "--port", str(port),
             "--model", str(model), "--workdir", str(work / "workdir"), "--workers", "1", *extra],
            stdout=out, stderr=subprocess.STDOUT, cwd=work, env=env, start_new_session=True)
    srv = Server(f"{scheme}://127.0.0.1:{port}", process, log, studies, model)
    deadline = time.monotonic() + 240
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"monai-anon serve ({scheme}) exited with {process.returncode}:\n{srv.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(srv.url + "/info/", timeout=5, verify=verify).status_code == ready_status:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"monai-anon serve ({scheme}) did not answer /info/ within 240 s:\n{srv.log_tail()}")
            time.sleep(0.5)
        yield srv
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, phantoms: dict[str, Path], tiny_model: Path) -> Iterator[Server]:
    """The real monai-anon MONAI Label app on 127.0.0.1, serving the DICOM phantoms with the tiny model."""
    yield from _serve(tmp_path_factory.mktemp("serve"), phantoms["dicom"], tiny_model, "http", [])


@pytest.fixture
def dead_url() -> str:
    """An address on this computer where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A TCP peer on loopback that accepts connections and reads requests but never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _addr = listener.accept()
            except OSError:
                continue
            conn.settimeout(0.2)
            held.append(conn)
            with contextlib.suppress(OSError):
                while not stop.is_set():
                    try:
                        if not conn.recv(65536):
                            break
                    except TimeoutError:
                        continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


# -- HTTPS ----------------------------------------------------------------------------------------------------
@dataclass
class Tls:
    ca: Path  # CA certificate (PEM) that signed the server certificate
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A throwaway certificate authority and a server certificate for 127.0.0.1 and localhost."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CaseAnonymizer test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    out = Tls(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    out.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return out


@pytest.fixture(scope="session")
def https_server(tmp_path_factory: pytest.TempPathFactory, phantoms: dict[str, Path], tiny_model: Path,
                 tls: Tls) -> Iterator[Server]:
    """The real app again, serving HTTPS with a certificate from the throwaway CA."""
    yield from _serve(tmp_path_factory.mktemp("serve-https"), phantoms["dicom"], tiny_model, "https",
                      ["--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key)], verify=str(tls.ca))


# -- token auth -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def issuer() -> Iterator[Any]:
    """A local OpenID issuer (users alice and bob, password ``secret``; bob has no MONAI Label role)."""
    iss = OpenIDIssuer().start()
    yield iss
    iss.stop()


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory, phantoms: dict[str, Path], tiny_model: Path,
                issuer: Any) -> Iterator[Server]:
    """The real app with token auth against ``issuer`` (``monai-anon serve --auth-realm``)."""
    yield from _serve(tmp_path_factory.mktemp("serve-auth"), phantoms["dicom"], tiny_model, "http",
                      ["--auth-realm", issuer.realm], ready_status=401)
