"""The inference workers of a real ``monai-anon serve``: warm before the server answers, and a worker killed
from outside (SIGKILL, as the kernel's out-of-memory killer does) costs at most the request it was running."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from server_testlib import Server, smooth_image, start_server, wait_until, write_png16

WORKERS = 2
WAIT_S = 300  # generous: a busy CI machine starts processes and loads models slowly


@pytest.fixture(scope="module")
def pool_server(tmp_path_factory, tiny_model, study_template) -> Server:
    """A server of its own (its workers get killed here), logging at info level."""
    root = tmp_path_factory.mktemp("workers-server")
    shutil.copytree(study_template, root / "studies")
    srv = start_server(root / "work", root / "studies", tiny_model, "--workers", str(WORKERS),
                       "--log-level", "info")
    yield srv
    srv.stop()


def worker_pids(server: Server) -> set[int]:
    """The inference worker processes, seen from outside: the children of the server's fork server."""
    children = psutil.Process(server.proc.pid).children()
    forkservers = [p for p in children if "forkserver" in " ".join(p.cmdline())]
    assert len(forkservers) == 1, [p.cmdline() for p in children]
    return {p.pid for p in forkservers[0].children() if p.status() != psutil.STATUS_ZOMBIE}


def kill(pid: int) -> None:
    """SIGKILL ``pid`` and wait until its parent has reaped it."""
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(pid), WAIT_S, interval=0.05, what=f"the end of process {pid}")


def busy_worker(server: Server) -> int:
    """A worker that is computing (its CPU time grows), waited for."""
    def find() -> int | None:
        for pid in worker_pids(server):
            try:
                if psutil.Process(pid).cpu_percent(0.2) > 30:
                    return pid
            except psutil.NoSuchProcess:
                continue
        return None

    return wait_until(find, WAIT_S, interval=0.05, what="an inference worker busy with a request")


def anonymize(server: Server, image: str, seed: int) -> tuple[int, str, str | None]:
    r = server.post(f"/infer/anonymize?image={image}&output=json", data={"params": json.dumps({"seed": seed})})
    return r.status_code, r.text, r.headers.get("Retry-After")


def first_phantom(server: Server) -> str:
    return next(i for i in sorted(server.get("/datastore/?output=all").json()["objects"]) if i.startswith("PH"))


def test_workers_are_warm_when_the_server_first_answers(pool_server):
    # start_server returned as soon as /info/ answered: the workers had loaded the model before that
    log = pool_server.log_tail(200_000)
    ready = re.search(r"monai-anon serve: ready at (\S+) \((\d+) inference workers, model loaded in (\d+)\)", log)
    assert ready, f"no 'ready' line in the log before /info/ answered:\n{log[-3000:]}"
    assert ready.group(1) == pool_server.url and ready.group(2) == ready.group(3) == str(WORKERS)
    before = worker_pids(pool_server)
    assert len(before) == WORKERS
    image = first_phantom(pool_server)
    status, text, _ = anonymize(pool_server, image, 1)
    assert status == 200, text
    assert worker_pids(pool_server) == before  # the first request started nothing: it found them warm


def test_an_idle_worker_killed_does_not_fail_the_next_requests(pool_server):
    image = first_phantom(pool_server)
    before = worker_pids(pool_server)
    victim = sorted(before)[0]
    kill(victim)
    with ThreadPoolExecutor(2 * WORKERS) as ex:
        results = list(ex.map(lambda s: anonymize(pool_server, image, s), range(2 * WORKERS)))
    assert [status for status, *_ in results] == [200] * (2 * WORKERS), results
    after = worker_pids(pool_server)
    assert victim not in after and len(after) == WORKERS and before - {victim} <= after
    assert f"inference worker {victim} had died while idle" in pool_server.log_tail(200_000)


def test_a_worker_killed_while_busy_fails_only_its_own_request(pool_server, tmp_path):
    payload = write_png16(tmp_path / "big.png", smooth_image((2048, 2048), 0.0, 60000.0)).read_bytes()

    def infer(seed: int) -> tuple[int, str, str | None]:
        r = pool_server.post("/infer/anonymize?output=json", files={"file": ("big.png", payload)},
                             data={"params": json.dumps({"seed": seed})})
        return r.status_code, r.text, r.headers.get("Retry-After")

    requests_n = 3 * WORKERS  # enough queued work that a worker is still busy when it is found
    with ThreadPoolExecutor(requests_n) as ex:
        futures = [ex.submit(infer, s) for s in range(requests_n)]
        victim = busy_worker(pool_server)
        kill(victim)
        results = [f.result() for f in futures]
    statuses = sorted(status for status, *_ in results)
    assert statuses == [200] * (requests_n - 1) + [503], results  # only the request the victim was running
    (status, text, retry_after), = [r for r in results if r[0] == 503]
    assert retry_after is not None and int(retry_after) > 0
    assert "send the request again" in json.loads(text)["detail"]
    after = worker_pids(pool_server)
    assert victim not in after and len(after) == WORKERS
    # and the server goes on as before
    status, text, _ = anonymize(pool_server, first_phantom(pool_server), 7)
    assert status == 200, text


def test_workers_killed_one_after_another_under_load(pool_server):
    image = first_phantom(pool_server)
    for _ in range(WORKERS):  # every original worker goes, idle; requests in between keep succeeding
        victim = sorted(worker_pids(pool_server))[0]
        kill(victim)
        with ThreadPoolExecutor(WORKERS + 1) as ex:
            results = list(ex.map(lambda s: anonymize(pool_server, image, s), range(WORKERS + 1)))
        assert [s for s, *_ in results] == [200] * (WORKERS + 1), results
    assert len(worker_pids(pool_server)) == WORKERS
