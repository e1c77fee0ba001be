"""CaseAnonymizerLib without a server: URLs, settings, parameters, jobs, uploads, summaries, export plans and
error messages."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from pathlib import Path

import pytest
from CaseAnonymizerLib import (
    CancelledError,
    ExportPlan,
    ImageRefusedError,
    Job,
    ServerClient,
    ServerFailedError,
    ServerTimeoutError,
    ServerUnreachableError,
    ServerUrlError,
    describe,
    dicom_upload,
    dicom_zip_upload,
    difference_window,
    extract_zip,
    is_loopback,
    normalize_server_url,
    summarize,
)
from CaseAnonymizerLib.client import parse_multipart
from CaseAnonymizerLib.settings import MAX_HISTORY, ConsentStore, UrlHistory
from CaseAnonymizerLib.urls import server_key

WAIT_S = 120  # generous: a busy CI machine may stall a thread for seconds; speed is measured elsewhere


class DictSettings:
    def __init__(self) -> None:
        self.data: dict = {}

    def value(self, key, default=None):
        return self.data.get(key, default)

    def setValue(self, key, value):
        self.data[key] = value


# -- server addresses --
@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("  http://LOCALHOST:8000/ ", "http://localhost:8000"),
    ("https://pacs.example.org/monai/", "https://pacs.example.org/monai"),
    ("http://[::1]:9000", "http://[::1]:9000"),
])
def test_normalize_server_url(text: str, expected: str) -> None:
    assert normalize_server_url(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "ftp://host", "http://", "http://host:99999", "http://h/?a=1",
                                  "http://user:pw@host"])
def test_bad_server_urls_are_one_sentence(text: str) -> None:
    with pytest.raises(ServerUrlError) as info:
        normalize_server_url(text)
    sentence, _details = describe(info.value)
    assert sentence.endswith(".") and "\n" not in sentence


def test_server_key_and_loopback() -> None:
    assert server_key("https://a.org") == "https://a.org:443"
    assert server_key("http://a.org") == "http://a.org:80"
    assert server_key("a.org:80") == server_key("http://A.org/")
    assert is_loopback("http://127.0.0.1:8000") and is_loopback("localhost") and is_loopback("http://[::1]")
    assert not is_loopback("http://10.0.0.1") and not is_loopback("https://example.org")


# -- settings --
def test_url_history_is_newest_first_unique_and_bounded() -> None:
    history = UrlHistory(DictSettings())
    for i in range(MAX_HISTORY + 3):
        history.add(f"127.0.0.1:{8000 + i}")
    history.add("http://127.0.0.1:8005/")
    urls = history.urls()
    assert urls[0] == "http://127.0.0.1:8005"
    assert len(urls) == MAX_HISTORY == len(set(urls))


def test_one_element_history_survives_a_string_backend() -> None:
    settings = DictSettings()
    UrlHistory(settings).add("http://a:1")
    assert isinstance(next(iter(settings.data.values())), str)  # stored as JSON text
    assert UrlHistory(settings).urls() == ["http://a:1"]


def test_consent_is_per_server_and_remembered_only_when_asked() -> None:
    ConsentStore.forget_session()
    settings = DictSettings()
    store = ConsentStore(settings)
    assert not store.has_consent("http://127.0.0.1:8000")
    store.grant("http://127.0.0.1:8000", remember=False)
    assert store.has_consent("127.0.0.1:8000")
    assert not store.has_consent("https://127.0.0.1:8000")  # another scheme is another server
    assert not store.has_consent("http://127.0.0.1:8001")
    ConsentStore.forget_session()  # a new Slicer session
    assert not ConsentStore(settings).has_consent("http://127.0.0.1:8000")
    ConsentStore(settings).grant("https://srv.example.org", remember=True)
    ConsentStore.forget_session()
    assert ConsentStore(settings).has_consent("https://srv.example.org:443")
    ConsentStore(settings).revoke("https://srv.example.org")
    assert not ConsentStore(settings).has_consent("https://srv.example.org")


# -- parameters (real vtkMRMLScriptedModuleNode) --
def test_parameters_round_trip_on_a_real_parameter_node(scene) -> None:
    import numpy as np
    import slicer
    from CaseAnonymizerLib.parameters import NODE, NODES, PARAMETERS, Parameters

    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    params = Parameters(node)
    params.set_defaults()
    for name, spec in PARAMETERS.items():
        if spec.type not in (NODE, NODES):
            assert getattr(params, name) == spec.default, name
    params.seed = 42
    params.randomSeed = False
    params.serverUrl = ""
    params.retainModifiedDates = True
    volume = slicer.util.addVolumeFromArray(np.zeros((1, 2, 2), np.float32))
    other = slicer.util.addVolumeFromArray(np.zeros((1, 2, 2), np.float32))
    params.inputVolume = volume
    params.caseVolumes = [volume, other]
    assert (params.seed, params.randomSeed, params.serverUrl) == (42, False, "")
    assert params.inputVolume.GetID() == volume.GetID()
    assert [n.GetID() for n in params.caseVolumes] == [volume.GetID(), other.GetID()]
    assert params.deid_options()["retain_modified_dates"] is True
    params.set_defaults()  # keeps what is set
    assert params.seed == 42 and params.serverUrl == ""
    with pytest.raises(AttributeError):
        params.nonexistent  # noqa: B018
    params.inputVolume = None
    assert params.inputVolume is None


# -- jobs --
def test_job_reports_progress_and_result() -> None:
    gate = threading.Event()

    def work(progress):
        progress("stage one", 0.25)
        assert gate.wait(WAIT_S), "the test never released the job"
        return 7

    job = Job(work, "t").start()
    deadline = time.monotonic() + WAIT_S
    while job.snapshot()[1] != "stage one":
        assert time.monotonic() < deadline, f"the job did not report its first stage within {WAIT_S} s"
        time.sleep(0.01)
    assert job.snapshot() == ("running", "stage one", 0.25)
    assert not job.finished
    gate.set()
    assert job.wait(WAIT_S), f"the job did not finish within {WAIT_S} s of its release"
    assert job.result() == 7 and job.state == "done"


def test_job_cancel_is_immediate_and_drops_the_result() -> None:
    gate = threading.Event()
    job = Job(lambda progress: gate.wait(5) or "late", "t").start()
    job.cancel()
    assert job.finished and job.state == "cancelled"
    with pytest.raises(CancelledError):
        job.result()
    gate.set()
    time.sleep(0.05)
    assert job.state == "cancelled"


def test_job_failure_is_raised_on_the_caller_thread() -> None:
    def work(progress):
        raise ServerFailedError("The server failed.", 500)

    job = Job(work, "t").start()
    job.wait(5)
    assert job.state == "failed"
    with pytest.raises(ServerFailedError):
        job.result()


# -- messages, views, summaries, export plans, DICOM files and multipart answers --
def test_describe_turns_any_exception_into_one_sentence() -> None:
    try:
        {}["x"]
    except KeyError as exc:
        sentence, details = describe(exc)
    assert sentence.startswith("Unexpected error (KeyError)") and "\n" not in sentence
    assert "Traceback" in details


def test_difference_window_is_symmetric() -> None:
    import numpy as np

    window, level = difference_window(np.array([-3.0, 0.0, 1.0, 2.0]))
    assert level == 0.0 and window > 0
    assert difference_window(np.zeros(4)) == (2.0, 0.0)


def test_summaries_show_predictions_and_cases() -> None:
    anon = {"seed": 5, "identity_distance": 0.5, "source_identity_distance": 0.1,
            "prediction_before": {"label": "normal", "probabilities": {"normal": 0.8, "effusion": 0.2}},
            "prediction_after": {"label": "normal", "probabilities": {"normal": 0.7, "effusion": 0.3}}}
    text = summarize("anonymize", anon)
    assert "seed: 5" in text and "normal (80 %)" in text and "normal (70 %)" in text
    explain = {"prediction": {"label": "effusion", "probabilities": {"normal": 0.1, "effusion": 0.9}},
               "cases": [{"finding": "effusion", "distance": 1.5, "seed": 1}]}
    text = summarize("explain", explain)
    assert "effusion (90 %)" in text and "Case 1: effusion, distance 1.5" in text


def test_export_plan_says_what_goes_where(tmp_path: Path) -> None:
    plan = ExportPlan(server="http://127.0.0.1:8000", source_files=["a.dcm"], seed=9, seed_from_preview=True,
                      headers_only=False, options={"retain_modified_dates": True, "retain_uids": False},
                      folder=str(tmp_path), to_database=True, to_pacs=False, candidates=4, mode="residual",
                      matches_preview=True)
    text = plan.describe()
    assert "1 DICOM file(s)" in text and "http://127.0.0.1:8000" in text and str(tmp_path) in text
    assert "in one request" in text and "DICOM database" in text and "PACS" not in text
    assert "the synthetic identity of the preview (seed 9)" in text and "is the anonymized image you saw" in text
    assert "differs" not in text  # the warning stays only where it is true
    assert plan.params() == {"headers_only": False, "stow": False, "seed": 9, "candidates": 4, "mode": "residual",
                             "retain_modified_dates": True}
    # a preview made from the pixels alone (no DICOM header): same seed, but not the same identity
    plan.matches_preview = False
    assert "preview's seed (9)" in plan.describe() and "differs from it" in plan.describe()
    plan.seed_from_preview, plan.seed = False, 12
    assert "a new seed (12)" in plan.describe() and "no preview" in plan.describe()
    plan.headers_only, plan.to_pacs = True, True
    assert "pixels kept" in plan.describe() and "PACS" in plan.describe()
    assert plan.params() == {"headers_only": True, "stow": True, "retain_modified_dates": True}


def test_extract_zip_refuses_paths_outside_the_folder(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("1.2/3.4/5.dcm", b"ok")
    assert [p.name for p in extract_zip(buf.getvalue(), tmp_path / "out")] == ["5.dcm"]
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.dcm", b"no")
    with pytest.raises(ServerFailedError):
        extract_zip(evil.getvalue(), tmp_path / "out2")
    assert not (tmp_path / "escape.dcm").exists()


def test_dicom_upload_names_the_file_as_dicom(tmp_path: Path) -> None:
    a, b = tmp_path / "a.dcm", tmp_path / "IM0001"
    a.write_bytes(b"A")
    b.write_bytes(b"B")
    assert dicom_upload(a) == ("a.dcm", b"A", "application/dicom")
    assert dicom_upload(b) == ("IM0001.dcm", b"B", "application/dicom")


def test_series_upload_is_one_zip_of_its_files(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    files = [tmp_path / "IM0001", tmp_path / "b.dcm", tmp_path / "x" / "IM0001"]
    for i, f in enumerate(files):
        f.write_bytes(bytes([i]) * 10)
    name, data, ctype = dicom_zip_upload([str(f) for f in files])
    assert (name, ctype) == ("series.zip", "application/zip")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == ["IM0001.dcm", "b.dcm", "00002-IM0001.dcm"]
        assert [zf.read(n) for n in zf.namelist()] == [f.read_bytes() for f in files]


def test_export_summary_reads_the_servers_refusals() -> None:
    details = {"summary": {"done": 1, "refused": [{"file": "/x/b.dcm", "reason": "not a radiograph"}],
                           "failed": [["c.dcm", "unreadable"]]}}
    text = summarize("export", details)
    assert "Exported 1 file(s); refused 1; failed 1." in text
    assert "b.dcm: not a radiograph" in text and "c.dcm: unreadable" in text
    assert "PACS" not in text
    stow = {"ok": False, "url": "http://pacs", "error": "STOW-RS to http://pacs failed: connection refused."}
    assert "PACS: not stored: STOW-RS to http://pacs failed" in summarize("export", {**details, "stow": stow})
    stored = {"ok": True, "stored": ["1.2", "1.3"], "study_uids": ["1"]}
    assert "PACS: stored 2 file(s)." in summarize("export", {**details, "stow": stored})
    assert "(for this patient: 77)" in summarize("anonymize", {"seed": 5, "identity_seed": 77})
    assert "for this patient" not in summarize("anonymize", {"seed": 5, "identity_seed": 5})


def test_parse_multipart_reads_monai_label_answers() -> None:
    body = (b"--xyz\r\nContent-Disposition: form-data; name=\"params\"\r\nContent-Type: application/json\r\n\r\n"
            b"{\"seed\": 3}\r\n--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"r.nii.gz\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n\x00\x01\r\n--xyz--\r\n")
    parts = parse_multipart(body, "multipart/form-data; boundary=xyz")
    assert parts[0][0] == "params" and json.loads(parts[0][3]) == {"seed": 3}
    assert parts[1][:3] == ("image", "r.nii.gz", "application/octet-stream") and parts[1][3] == b"\x00\x01"


# -- error messages from real sockets --
def test_server_down_message(dead_url: str) -> None:
    with pytest.raises(ServerUnreachableError) as info:
        ServerClient(dead_url, read_timeout=5).info()
    assert describe(info.value)[0] == (f"Cannot reach the server at {dead_url}; check that it is running and that "
                                       "the address is right.")


def test_timeout_message(silent_url: str) -> None:
    client = ServerClient(silent_url, read_timeout=1)
    started = time.monotonic()
    with pytest.raises(ServerTimeoutError) as info:
        client.info()
    # the 1 s read timeout ends the request (a peer that never answers would otherwise hold it for ever)
    assert time.monotonic() - started < WAIT_S, f"the 1 s read timeout did not end the request within {WAIT_S} s"
    assert describe(info.value)[0] == (f"The server at {silent_url} did not answer within 1 s; it may be busy: "
                                       "try again or raise the timeout.")


def test_refused_image_message_carries_the_servers_reason() -> None:
    import requests

    response = requests.Response()
    response.status_code = 422
    response._content = b'{"detail": "image.nii.gz has shape (64, 64, 3); only 2D images are supported."}'
    response.request = requests.Request("POST", "http://127.0.0.1:1/infer/anonymize").prepare()
    response.url = response.request.url
    with pytest.raises(ImageRefusedError) as info:
        ServerClient("http://127.0.0.1:1")._raise_for_status(response, "anonymize")
    assert describe(info.value)[0] == ("The server refused the image: image.nii.gz has shape (64, 64, 3); only 2D "
                                       "images are supported.")
