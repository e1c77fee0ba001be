"""Batch on Dask against real processes on loopback: a ``dask scheduler`` and two ``dask worker`` processes
started here, the real ``monai-anon`` command as a subprocess, workers and clients killed with SIGKILL."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from distributed import Client

from monai_anon_app.imageio.images import PARTIAL_PREFIX
from monai_anon_app.runner.journal import JOURNAL_NAME, Journal

KEY = ["--key", "dask-test-key-0123"]
DASK = Path(sys.executable).with_name("dask")


def monai_anon(*args: object, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monai_anon_app.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def spawn(command: list[str], log: Path) -> subprocess.Popen:
    """``command`` in the background, its output in ``log``."""
    with open(log, "w") as fh:
        return subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT)


def start_monai_anon(*args: object, log: Path) -> subprocess.Popen:
    return spawn([sys.executable, "-m", "monai_anon_app.cli", *map(str, args)], log)


def summary_of(text: str, command: str) -> tuple[int, int, int, int]:
    """(done, refused, failed, skipped) from the summary line of ``anonymize``."""
    m = re.search(rf"{command}: (\d+) done, (\d+) refused, (\d+) failed, (\d+) skipped", text)
    assert m, text
    return tuple(map(int, m.groups()))  # type: ignore[return-value]


def outputs(folder: Path) -> dict[str, bytes]:
    """The complete output files under ``folder`` (not the journal, not a file still being written)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != JOURNAL_NAME and not p.name.startswith(PARTIAL_PREFIX)}


def partial_files(folder: Path) -> list[Path]:
    return list(folder.rglob(f"{PARTIAL_PREFIX}*"))


def journal_lines(folder: Path) -> list[str]:
    path = folder / JOURNAL_NAME
    return path.read_text().splitlines() if path.is_file() else []


def wait_until(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """24 phantom radiographs of 6 patients as DICOM (and their labels.csv), a corrupt DICOM file and a text file."""
    folder = tmp_path_factory.mktemp("dask") / "in"
    r = monai_anon("phantoms", folder, "--patients", 6, "--images-per-patient", 4, "--size", 64, "--format",
                   "dicom", "--seed", 31, "--no-progress")
    assert r.returncode == 0, r.stderr
    (folder / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    (folder / "notes.txt").write_text("Jane Doe called about her results")
    return folder


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A real Dask scheduler on 127.0.0.1 and two worker processes (one thread each)."""
    assert DASK.is_file(), "the dask command is missing: pip install -e .[test]"
    folder = tmp_path_factory.mktemp("cluster")
    scheduler_file = folder / "scheduler.json"
    procs = [spawn([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                    "--scheduler-file", str(scheduler_file)], folder / "scheduler.log")]
    wait_until(scheduler_file.is_file, 60, "the scheduler")

    def start_worker(i: int) -> subprocess.Popen:
        p = spawn([str(DASK), "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1", "--no-nanny",
                   "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{i}"], folder / f"worker{i}.log")
        procs.append(p)
        return p

    workers = [start_worker(0), start_worker(1)]
    address = json.loads(scheduler_file.read_text())["address"]
    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=120)
    yield {"address": address, "workers": workers, "start_worker": start_worker}
    for p in procs:
        p.kill()
        p.wait(timeout=30)


def test_a_batch_on_the_cluster_matches_one_process_byte_for_byte(cohort, cluster, tiny_model, tmp_path):
    single, dask = tmp_path / "single", tmp_path / "dask"
    common = ["--model", tiny_model, "--seed", 5, *KEY, "--no-progress"]
    r1 = monai_anon("anonymize", cohort, single, *common)
    r2 = monai_anon("anonymize", cohort, dask, *common, "--scheduler", cluster["address"])
    assert summary_of(r1.stdout, "anonymize") == summary_of(r2.stdout, "anonymize") == (24, 1, 0, 2)
    assert r1.returncode == r2.returncode == 1  # the corrupt file was refused: not everything asked for was done
    assert re.search(r"refused: \S*broken\.dcm: .+", r2.stderr), r2.stderr  # reported with its reason
    a, b = outputs(single), outputs(dask)
    assert len(a) == 24 and a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []  # headers and pixels byte-identical
    journal = "\n".join(journal_lines(dask))
    identifiers = {p.name for p in cohort.iterdir()} | {str(pydicom.dcmread(p).PatientID)
                                                          for p in cohort.rglob("*.dcm") if p.name != "broken.dcm"}
    assert not [i for i in identifiers if i in journal]  # keyed digests only: no file name, no patient ID
    assert len(journal_lines(dask)) == 26 and all(re.fullmatch(r"[0-9a-f]{64} (done|skipped) .*", line)
                                                  for line in journal_lines(dask))


def test_deid_on_an_embedded_local_cluster_matches_one_process(cohort, tmp_path):
    single, local = tmp_path / "single", tmp_path / "local"
    r1 = monai_anon("deid", cohort, single, *KEY, "--no-progress")
    r2 = monai_anon("deid", cohort, local, *KEY, "--no-progress", "--workers", 2)
    assert r1.stdout.splitlines()[-1] == r2.stdout.splitlines()[-1] == \
        "deid: 24 done, 2 skipped (2 not DICOM), 1 failed"
    a, b = outputs(single), outputs(local)
    assert len(a) == 24 and a == b


def test_a_worker_killed_mid_run_leaves_every_file_written_once(cohort, cluster, tiny_model, tmp_path):
    out = tmp_path / "out"
    run = start_monai_anon("anonymize", cohort, out, "--model", tiny_model, "--seed", 6, *KEY, "--no-progress",
                           "--scheduler", cluster["address"], "--chunk-size", 1, log=tmp_path / "log")
    wait_until(lambda: len(journal_lines(out)) >= 2 or run.poll() is not None, 300, "the first finished chunk")
    victim = cluster["workers"][0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert run.poll() is None and len(journal_lines(out)) < 26, "the batch had finished before the kill"
    cluster["workers"][0] = cluster["start_worker"](2)  # the cluster gets a replacement, as a site's would
    assert run.wait(timeout=600) == 1
    text = (tmp_path / "log").read_text()
    assert summary_of(text, "anonymize") == (24, 1, 0, 2), text
    written = outputs(out)
    assert len(written) == 24 and all(name.endswith(".dcm") for name in written)
    assert partial_files(out) == []  # what the killed worker was writing is gone
    for data in written.values():
        assert pydicom.dcmread(io.BytesIO(data)).pixel_array.shape == (64, 64)
    digests = [line.split()[0] for line in journal_lines(out)]
    assert len(digests) == len(set(digests)) == 26  # every finished file recorded once (not the refused one)


def test_a_killed_client_started_again_redoes_nothing_finished(cohort, cluster, tiny_model, tmp_path):
    out = tmp_path / "out"
    args = ("anonymize", cohort, out, "--model", tiny_model, "--seed", 7, *KEY, "--no-progress", "--scheduler",
            cluster["address"], "--chunk-size", 1)
    first = start_monai_anon(*args, log=tmp_path / "first.log")
    wait_until(lambda: len(journal_lines(out)) >= 2 or first.poll() is not None, 300, "the first finished chunk")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    finished_before = journal_lines(out)
    assert 0 < len(finished_before) < 26, "the client was killed after the batch had finished"
    stamps = {name: (out / name).stat().st_mtime_ns for name in outputs(out)}
    time.sleep(1.0)
    r = monai_anon(*args)
    assert summary_of(r.stdout, "anonymize") == (24, 1, 0, 2), r.stdout + r.stderr
    written = outputs(out)
    assert len(written) == 24
    done_digests = [line.split()[0] for line in journal_lines(out)]
    assert len(done_digests) == len(set(done_digests)) == 26
    # files the first run had recorded as finished were not written again
    recorded_done = sum(1 for line in finished_before if " done " in line)
    untouched = [n for n, t in stamps.items() if (out / n).stat().st_mtime_ns == t]
    assert partial_files(out) == []
    assert len(untouched) >= recorded_done
    # and the result is what one uninterrupted run makes
    reference = tmp_path / "reference"
    monai_anon("anonymize", cohort, reference, "--model", tiny_model, "--seed", 7, *KEY, "--no-progress")
    assert outputs(reference) == written


def test_pixels_do_not_depend_on_the_parallelism(cohort, tiny_model, tmp_path):
    """The rule behind byte-identical outputs: one torch thread per batch process, so two runs in one process
    agree with each other and with two local workers to the last pixel."""
    runs = {}
    for name, extra in (("one", []), ("two", ["--workers", 2])):
        out = tmp_path / name
        r = monai_anon("anonymize", cohort, out, "--model", tiny_model, "--seed", 8, *KEY, "--no-progress", *extra)
        assert summary_of(r.stdout, "anonymize")[0] == 24, r.stdout + r.stderr
        runs[name] = outputs(out)
    for key, data in runs["one"].items():
        a = pydicom.dcmread(io.BytesIO(data)).pixel_array
        b = pydicom.dcmread(io.BytesIO(runs["two"][key])).pixel_array
        assert np.array_equal(a, b), key


def test_a_finished_counterfactual_batch_started_again_redoes_nothing(cohort, cluster, tiny_model, tmp_path):
    out = tmp_path / "out"
    args = ("counterfactual", cohort, out, "--target", "nodule", "--model", tiny_model, *KEY, "--no-progress",
            "--scheduler", cluster["address"])
    first = monai_anon(*args)
    assert summary_of(first.stdout, "counterfactual") == (24, 1, 0, 2), first.stdout + first.stderr
    stamps = {name: (out / name).stat().st_mtime_ns for name in outputs(out)}
    again = monai_anon(*args)  # no --seed: a counterfactual draws none, so the run's fingerprint is the same
    assert summary_of(again.stdout, "counterfactual") == (24, 1, 0, 2), again.stdout + again.stderr
    assert {name: (out / name).stat().st_mtime_ns for name in outputs(out)} == stamps


def test_a_duplicate_instance_is_skipped_on_the_cluster_as_in_one_process(cohort, cluster, tmp_path):
    folder = tmp_path / "in"
    first, second = [p for p in sorted(cohort.rglob("*.dcm")) if p.name != "broken.dcm"][:2]
    folder.mkdir()
    for name in ("a.dcm", "b.dcm"):  # the same instance twice, as archives that were copied twice hold it
        (folder / name).write_bytes(first.read_bytes())
    (folder / "c.dcm").write_bytes(second.read_bytes())
    single, dask = tmp_path / "single", tmp_path / "dask"
    r1 = monai_anon("deid", folder, single, *KEY, "--no-progress")
    r2 = monai_anon("deid", folder, dask, *KEY, "--no-progress", "--scheduler", cluster["address"], "--chunk-size", 1)
    assert r1.stdout.splitlines()[-1] == r2.stdout.splitlines()[-1] == \
        "deid: 2 done, 1 skipped (1 duplicate instance), 0 failed"
    assert outputs(single) == outputs(dask) and len(outputs(dask)) == 2


def test_an_unknown_counterfactual_class_stops_before_any_file(cohort, tiny_model, tmp_path):
    r = monai_anon("counterfactual", cohort, tmp_path / "out", "--target", "fracture", "--model", tiny_model,
                   "--no-progress", "--workers", 1)
    assert r.returncode == 2 and "unknown class 'fracture'" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_the_journal_is_readable_at_once_and_forced_to_disk_at_most_every_interval(tmp_path, monkeypatch):
    """Every record reaches the operating system at once (what a killed client's restart reads); ``fsync``
    (which on ext4 also writes out every output file written before it) runs only once ``sync_every``
    seconds have passed, and at the end of a run."""
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    journal = Journal(tmp_path, b"journal-test-key", "fingerprint", sync_every=3600)
    journal.record([("a" * 64, "done", ""), ("b" * 64, "skipped", "not DICOM"), ("c" * 64, "failed", "x")])
    assert synced == []
    assert Journal(tmp_path, b"journal-test-key", "fingerprint").finished() == {
        "a" * 64: ("done", ""), "b" * 64: ("skipped", "not DICOM")}
    journal.sync()
    assert len(synced) == 1
    journal.sync_every = 0
    journal.record([("d" * 64, "done", "")])
    assert len(synced) == 2
