"""Benchmark the MONAI Label server against the inference API in-process, on this machine, in one run.

Measures (every ratio against baselines measured in the same run):

* REST round-trip latency (p50, p99) of ``anonymize`` on a warm server for a 512×512 DICOM image, by
  datastore id and as an upload, vs. ``Anonymizer.anonymize`` in-process (same image, same seeds) with
  the worker's torch thread count and with the default one — the ratio is the serving overhead;
* throughput with 1, 4 and 8 concurrent clients, and failed requests among 8 × 50;
* ``/info`` latency while 4 inferences run;
* start-up time to the first ``/info`` answer, and to the first inference (workers warm);
* server memory (RSS of the server, its fork server and workers) with the model loaded.

Usage::

    .venv/bin/python benchmarks/bench_server.py [--model DIR|NAME] [--requests 50] [--size 512]
                                                [--workers N] [--conf KEY VALUE] [--out results.json]

Without ``--model`` the shipped default model is used when it exists, else the tiny test model is
trained into a temporary folder first (and the report says so).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q)) if values else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    """Milliseconds: p50, p99, mean, max."""
    return {"p50_ms": round(percentile(values, 50), 2), "p99_ms": round(percentile(values, 99), 2),
            "mean_ms": round(statistics.fmean(values) * 1000, 2) if values else float("nan"),
            "max_ms": round(max(values) * 1000, 2) if values else float("nan"), "n": len(values)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve_model(name: str | None, scratch: Path) -> tuple[Path, str]:
    from monai_anon_app.modelfolder.folder import MODEL_FILES
    from monai_anon_app.modelfolder.registry import resolve_model as resolve

    model = resolve(name)
    if all((model / f).is_file() for f in MODEL_FILES):
        return model, f"{model.name} ({model})"
    if name:
        raise SystemExit(f"{model} is not a complete model folder")
    from monai_anon_app.modelfolder.config import load_config
    from monai_anon_app.training.fit import train_model

    out = scratch / "tiny"
    print(f"default model {model} missing: training the tiny test model into {out} …", flush=True)
    train_model(load_config(REPO / "monai_anon_app/training/configs/tiny.yaml"), out, progress=False)
    return out, "tiny (trained for this run: the default model was not there)"


def make_study(folder: Path, size: int) -> Path:
    from monai_anon_app.data.cohort_writer import write_cohort
    from monai_anon_app.data.phantoms import Cohort

    write_cohort(folder, Cohort(3, 1, seed=11), size, "dicom", progress=False)
    return folder


def rss_mb(pid: int) -> dict[str, float]:
    """Memory of the server and its children (fork server, workers): RSS, and PSS, which counts pages
    the forked workers share only once."""
    import psutil

    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    rss = [p.memory_info().rss / 2**20 for p in procs]
    try:
        pss = [p.memory_full_info().pss / 2**20 for p in procs]
    except (psutil.AccessDenied, AttributeError):
        pss = [float("nan")] * len(procs)
    return {"server_rss_mb": round(rss[0], 1), "children_rss_mb": round(sum(rss[1:]), 1),
            "total_rss_mb": round(sum(rss), 1), "total_pss_mb": round(sum(pss), 1), "processes": len(procs)}


def in_process(model_dir: Path, pixels: np.ndarray, n: int, threads: int | None) -> list[float]:
    import torch

    from monai_anon_app.inference import Anonymizer

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        anonymizer = Anonymizer.load(model_dir)
        for i in range(3):
            anonymizer.anonymize(pixels, seed=i)
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            anonymizer.anonymize(pixels, seed=i)
            times.append(time.perf_counter() - t0)
        return times
    finally:
        torch.set_num_threads(before)


def timed(session: requests.Session, method: str, url: str, **kw) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    r = session.request(method, url, timeout=600, **kw)
    body = len(r.content)
    return time.perf_counter() - t0, r.status_code, body


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model folder or name (default: the shipped default model, else tiny)")
    ap.add_argument("--requests", type=int, default=50, help="requests per latency series and per client")
    ap.add_argument("--size", type=int, default=512, help="image side in pixels")
    ap.add_argument("--workers", type=int, help="inference workers (default: the server's default)")
    ap.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    help="server setting passed to monai-anon serve --conf (e.g. worker_nice 5)")
    ap.add_argument("--out", type=Path, help="also write the JSON results to this file")
    args = ap.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="bench-server-"))
    model_dir, model_note = resolve_model(args.model, scratch)
    study = make_study(scratch / "study", args.size)
    image_path = sorted((study / "images").glob("*.dcm"))[0]
    image_id = image_path.name[:-4]
    from monai_anon_app.dicom.pixels import read_dicom_image

    pixels = read_dicom_image(image_path).pixels
    n = args.requests
    results: dict = {"model": model_note, "image": f"{args.size}x{args.size} DICOM DX", "requests": n,
                     "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                 "load_average_at_start": list(os.getloadavg())}}

    # -- in-process baselines (before the server competes for the CPUs) --------------------------
    cpus = os.cpu_count() or 1
    workers = args.workers if args.workers is not None else min(2, cpus)
    worker_threads = max(1, cpus // max(workers, 1))
    base_worker = in_process(model_dir, pixels, n, worker_threads)
    base_default = in_process(model_dir, pixels, n, None)

    # -- start-up ---------------------------------------------------------------------------------
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "monai_anon_app.cli", "serve", "--studies", str(study), "--model", str(model_dir),
           "--workdir", str(scratch / "work"), "--port", str(port), "--log-level", "warning"]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    for key, value in args.conf:
        cmd += ["--conf", key, value]
    results["server_conf"] = dict(args.conf)
    log = open(scratch / "server.log", "wb")  # noqa: SIM115
    t_start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    session = requests.Session()
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited:\n{(scratch / 'server.log').read_text()[-3000:]}")
            try:
                if session.get(url + "/info/", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        t_info = time.perf_counter() - t_start
        infer_url = f"{url}/infer/anonymize?image={image_id}&output=image"
        first = session.post(infer_url, data={"params": json.dumps({"seed": 0})}, timeout=900)
        assert first.status_code == 200, first.text
        t_warm = time.perf_counter() - t_start
        results["startup"] = {"first_info_s": round(t_info, 2), "first_inference_s": round(t_warm, 2)}
        for i in range(3):  # warm every worker
            session.post(infer_url, data={"params": json.dumps({"seed": i})})
        results["memory"] = rss_mb(proc.pid)

        # -- latency: interleaved with the in-process call, so both see the same machine load --------
        import torch

        from monai_anon_app.inference import Anonymizer

        anonymizer = Anonymizer.load(model_dir)
        default_threads = torch.get_num_threads()
        torch.set_num_threads(worker_threads)  # as in a worker; set once (changing it costs time)
        for i in range(3):
            anonymizer.anonymize(pixels, seed=i)
        by_id, as_json, upload, baseline = [], [], [], []
        payload = image_path.read_bytes()
        for i in range(n):
            t0 = time.perf_counter()
            anonymizer.anonymize(pixels, seed=i)
            baseline.append(time.perf_counter() - t0)
            by_id.append(timed(session, "POST", infer_url, data={"params": json.dumps({"seed": i})})[0])
            as_json.append(timed(session, "POST", infer_url.replace("output=image", "output=json"),
                                 data={"params": json.dumps({"seed": i})})[0])
            upload.append(timed(session, "POST", f"{url}/infer/anonymize?output=image",
                                data={"params": json.dumps({"seed": i})},
                                files={"file": (image_path.name, payload)})[0])
        results["latency"] = {
            "in_process_worker_threads": {**summary(baseline), "threads": worker_threads},
            "in_process_worker_threads_before_server": {**summary(base_worker), "threads": worker_threads},
            "in_process_default_threads_before_server": {**summary(base_default), "threads": default_threads},
            "rest_by_id_image": summary(by_id), "rest_by_id_json": summary(as_json),
            "rest_upload_image": summary(upload),
        }
        torch.set_num_threads(default_threads)
        p50 = percentile(baseline, 50)
        results["overhead_ratio_p50"] = {
            "by_id_image": round(percentile(by_id, 50) / p50, 2),
            "by_id_json": round(percentile(as_json, 50) / p50, 2),
            "upload_image": round(percentile(upload, 50) / p50, 2),
        }

        # -- throughput ---------------------------------------------------------------------------
        def run_clients(clients: int, per_client: int) -> dict:
            statuses: list[int] = []
            lock = threading.Lock()

            def one(c: int) -> None:
                s = requests.Session()
                for k in range(per_client):
                    try:
                        _, status, _ = timed(s, "POST", infer_url, data={"params": json.dumps({"seed": c * 1000 + k})})
                    except requests.RequestException:
                        status = -1
                    with lock:
                        statuses.append(status)

            t0 = time.perf_counter()
            with ThreadPoolExecutor(clients) as ex:
                list(ex.map(one, range(clients)))
            elapsed = time.perf_counter() - t0
            failed = sum(1 for s in statuses if s != 200)
            return {"clients": clients, "requests": len(statuses), "failed": failed,
                    "requests_per_s": round(len(statuses) / elapsed, 2), "seconds": round(elapsed, 1)}

        results["throughput"] = [run_clients(1, n), run_clients(4, max(1, n // 2)), run_clients(8, n)]

        # -- /info while 4 inferences run ---------------------------------------------------------
        stop = threading.Event()
        busy: list[int] = []

        def hammer(c: int) -> None:
            s = requests.Session()
            k = 0
            while not stop.is_set():
                busy.append(timed(s, "POST", infer_url, data={"params": json.dumps({"seed": k})})[1])
                k += 1

        info_times: list[float] = []
        with ThreadPoolExecutor(4) as ex:
            for c in range(4):
                ex.submit(hammer, c)
            time.sleep(1.0)
            for _ in range(max(20, n)):
                dt, status, _ = timed(session, "GET", url + "/info/")
                assert status == 200
                info_times.append(dt)
                time.sleep(0.05)
            stop.set()
        results["info_under_load"] = {**summary(info_times), "concurrent_inferences": 4,
                                      "inferences_done": len(busy), "inference_failures": sum(s != 200 for s in busy)}
        results["info_idle"] = summary([timed(session, "GET", url + "/info/")[0] for _ in range(20)])
        results["memory_after"] = rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()

    results["targets"] = {
        "overhead_ratio_le_2": results["overhead_ratio_p50"]["by_id_image"] <= 2.0,
        "info_p99_under_load_lt_200ms": results["info_under_load"]["p99_ms"] < 200,
        "no_failed_request_8x50": results["throughput"][2]["failed"] == 0,
    }
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
