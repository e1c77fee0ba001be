"""Training on several processes (torch DDP through torchrun, gloo on the CPU): the real CLI with ``--nproc 2``,
listening on loopback only, interrupted and resumed, the published model used by ``monai-anon anonymize``; the
ranks split every step's patients and keep identical weights (the trainer's per-rank trace,
``MONAI_ANON_TRAIN_TRACE``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import yaml
from torch.distributed.elastic.rendezvous import RendezvousParameters

from monai_anon_app.cli import main
from monai_anon_app.data.datasets import PatientBatchSampler
from monai_anon_app.modelfolder.config import load_config
from monai_anon_app.server.params import Option
from monai_anon_app.server.request_errors import RequestError
from monai_anon_app.server.train import DisentanglerTrainTask, ddp_processes
from monai_anon_app.training.distributed import LOOPBACK, LoopbackRendezvous, create_loopback_rendezvous
from monai_anon_app.training.fit import load_training_data
from monai_anon_app.training.launch import loopback_interface
from monai_anon_app.training.trainer import CHECKPOINT, TRACE_ENV, DisentanglerTrainer

TINY_CONFIG = Path(__file__).resolve().parents[2] / "monai_anon_app" / "training" / "configs" / "tiny.yaml"
STEPS = 16


def cli(*args: object, trace: Path | None = None, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """The real console entry point in a subprocess (with the per-rank trace written to ``trace``)."""
    env = {**(os.environ if env is None else env), **({TRACE_ENV: str(trace)} if trace else {})}
    return subprocess.Popen([sys.executable, "-m", "monai_anon_app.cli", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def wait_for(proc: subprocess.Popen, ready: Callable[[], bool], what: str, timeout: float = 240) -> None:
    """Poll ``ready`` every 10 ms until it holds; fail if ``proc`` ends or ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.01)


def listening(procs: list[psutil.Process]) -> dict[int, list[str]]:
    """The addresses (``ip:port``) each process in ``procs`` listens on with TCP."""
    found = {}
    for proc in procs:
        conns = proc.net_connections(kind="tcp") if hasattr(proc, "net_connections") else proc.connections("tcp")
        found[proc.pid] = [f"{c.laddr.ip}:{c.laddr.port}" for c in conns if c.status == psutil.CONN_LISTEN]
    return found


def other_interface() -> str | None:
    """A network interface other than loopback with an IPv4 address (where gloo listens when told to)."""
    return next((name for name, addrs in psutil.net_if_addrs().items() if name != loopback_interface()
                 and any(a.family == socket.AF_INET for a in addrs)), None)


def read_trace(folder: Path) -> dict[int, list[dict]]:
    return {r: [json.loads(line) for line in (folder / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)}


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    raw = yaml.safe_load(TINY_CONFIG.read_text())
    raw.update(steps=STEPS, checkpoint_every=2)
    path = tmp_path_factory.mktemp("ddp-config") / "ddp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
def test_two_ranks_train_resume_and_publish_a_model_the_cli_uses(config, tmp_path):
    out = tmp_path / "model"
    cfg = load_config(config)
    train_cmd = ("train", out, "--config", config, "--nproc", "2", "--no-progress")

    # 1. interrupted (Ctrl-C) as soon as the first checkpoint is written: torchrun and both ranks end with it.
    # While the first steps run, every socket of the run listens on loopback only, even with gloo pointed at
    # another interface. (Ctrl-C goes out the moment the checkpoint appears, with STEPS - 2 steps still to run:
    # on a loaded machine, checking the sockets in between let the run finish first.)
    other = other_interface()
    first = cli(*train_cmd, trace=tmp_path / "trace1", env={**os.environ, **({"GLOO_SOCKET_IFNAME": other} if other
                                                                            else {})})
    wait_for(first, lambda: all((tmp_path / "trace1" / f"rank{r}.jsonl").is_file() for r in (0, 1)), "a first step")
    children = psutil.Process(first.pid).children(recursive=True)
    assert len(children) >= 3  # torchrun and its two workers
    sockets = listening([psutil.Process(first.pid), *children])
    assert sum(map(len, sockets.values())) >= 3, sockets  # torchrun's store, one gloo listener a rank
    assert all(a.rsplit(":", 1)[0] in ("127.0.0.1", "::1") for addrs in sockets.values() for a in addrs), sockets
    wait_for(first, (out / CHECKPOINT).is_file, "a checkpoint")
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err[-3000:]
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"left running: {alive}"
    saved = torch.load(out / CHECKPOINT, weights_only=False)
    assert saved["world_size"] == 2 and len(saved["rank_rng"]) == 2
    stopped_at = saved["step"]
    assert 2 <= stopped_at < STEPS, "the run ended before it could be interrupted"
    assert not (out / "model.pt").exists()

    # 2. the same command resumes from that checkpoint and publishes the model folder
    second = cli(*train_cmd, trace=tmp_path / "trace2")
    stdout, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-3000:]
    assert f"model written to {out} ({STEPS} steps, image size 64, 2 processes)" in stdout
    assert "@monai-anon" not in stdout  # the progress protocol stays between the ranks and the launcher

    first_trace, resumed = read_trace(tmp_path / "trace1"), read_trace(tmp_path / "trace2")
    for rank in (0, 1):
        assert [t["step"] for t in resumed[rank]] == list(range(stopped_at + 1, STEPS + 1))
        assert [t["step"] for t in first_trace[rank]][:stopped_at] == list(range(1, stopped_at + 1))
    # every step's patients are split between the ranks: disjoint, together the batch one process would draw
    data = load_training_data(cfg)
    train, _ = data.split_patients(cfg.calibration_fraction, seed=cfg.seed)
    one_process = iter(PatientBatchSampler(train.patient_ids, cfg.patients_per_batch, cfg.images_per_patient,
                                           seed=cfg.seed))
    whole = [set(np.asarray(train.patient_ids)[next(one_process)]) for _ in range(STEPS)]
    patients = sorted(set(train.patient_ids))
    steps = {r: first_trace[r][:stopped_at] + resumed[r] for r in (0, 1)}
    for a, b in zip(steps[0], steps[1], strict=True):
        assert a["step"] == b["step"] and a["world"] == b["world"] == 2
        assert len(a["patients"]) == len(b["patients"]) == cfg.patients_per_batch // 2
        assert not set(a["patients"]) & set(b["patients"])
        assert {patients[i] for i in a["patients"] + b["patients"]} == whole[a["step"] - 1]
        assert a["images"] == b["images"] == cfg.patients_per_batch // 2 * cfg.images_per_patient
        # gradients averaged across ranks: bitwise the same weights after every step, one frozen judge
        assert a["weights"] == b["weights"] and a["judge"] == b["judge"]
    assert len({t["judge"] for r in (0, 1) for t in steps[r]}) == 1
    assert len({t["weights"] for t in steps[0]}) == STEPS  # they did train

    # 3. the published model anonymizes a phantom DICOM through the CLI
    assert main(["phantoms", str(tmp_path / "dicom"), "--patients", "1", "--images-per-patient", "1", "--size",
                 "64", "--seed", "7", "--format", "dicom", "--no-progress"]) == 0
    assert main(["anonymize", str(tmp_path / "dicom"), str(tmp_path / "anonymized"), "--model", str(out),
                 "--seed", "3", "--no-progress"]) == 0
    assert len(list((tmp_path / "anonymized").rglob("*.dcm"))) == 1

    # 4. a checkpoint of 2 processes is not resumed by 1 (its random streams are per rank)
    with pytest.raises(ValueError, match="resume it with --nproc 2"):
        DisentanglerTrainer(cfg, train, out)


def test_the_sampler_splits_each_batch_between_ranks():
    ids = [f"P{i // 3:02d}" for i in range(30)]  # 10 patients, 3 images each
    alone = iter(PatientBatchSampler(ids, 5, 2, seed=4))
    ranks = [iter(PatientBatchSampler(ids, 5, 2, seed=4, rank=r, world=2)) for r in (0, 1)]
    for _ in range(20):
        whole = next(alone)
        a, b = (next(r) for r in ranks)
        assert len(a) == 3 * 2 and len(b) == 2 * 2  # 5 patients: 3 and 2
        assert not {ids[i] for i in a} & {ids[i] for i in b}
        np.testing.assert_array_equal(np.concatenate([a, b]), whole)
    assert PatientBatchSampler(ids, 5, 2, rank=1, world=2).fraction == 0.4
    with pytest.raises(ValueError, match="cannot be split between 3 processes"):
        PatientBatchSampler(ids[:6], 5, 2, rank=0, world=3)


def test_rest_multi_gpu_maps_to_ddp_processes():
    options = {o.name: o for o in DisentanglerTrainTask.options}
    assert {"multi_gpu", "gpus", "processes"} <= set(options)
    assert isinstance(options["processes"], Option) and options["processes"].default == 2
    task = DisentanglerTrainTask.__new__(DisentanglerTrainTask)  # parse needs no model store
    parsed = task.parse({"multi_gpu": True, "processes": 3, "gpus": "all", "max_epochs": 5, "local_rank": 0})
    assert ddp_processes(parsed, cuda_devices=0) == 3  # no CUDA: the CPU processes asked for
    assert ddp_processes(parsed, cuda_devices=4) == 4  # one per visible GPU
    assert ddp_processes({**parsed, "gpus": "0,2"}, cuda_devices=4) == 2
    assert ddp_processes({**parsed, "multi_gpu": False}, cuda_devices=4) == 1
    assert ddp_processes(task.parse({}), cuda_devices=0) == 1  # the default: one process
    with pytest.raises(RequestError, match="gpus"):
        task.parse({"multi_gpu": True, "gpus": "0;rm -rf"})
    with pytest.raises(RequestError, match="processes"):
        task.parse({"multi_gpu": True, "processes": 0})


def test_the_rendezvous_store_listens_on_loopback_only():
    rdzv = LoopbackRendezvous("test-run")
    info = rdzv.next_rendezvous()
    assert (info.rank, info.world_size, rdzv.use_agent_store) == (0, 1, True)
    port = info.bootstrap_store_info.master_port
    assert info.bootstrap_store_info.master_addr == LOOPBACK and port > 0
    info.store.set("key", "value")
    assert info.store.get("key") == b"value"
    assert f"{LOOPBACK}:{port}" in listening([psutil.Process()])[os.getpid()]
    assert rdzv.next_rendezvous().bootstrap_store_info.master_port == port  # one store for the run
    params = {"backend": "monai-anon-loopback", "run_id": "r", "min_nodes": 1, "max_nodes": 1}
    with pytest.raises(ValueError, match=r"listens on 127\.0\.0\.1"):
        create_loopback_rendezvous(RendezvousParameters(endpoint="0.0.0.0:0", **params))
    with pytest.raises(ValueError, match="one machine"):
        create_loopback_rendezvous(RendezvousParameters(endpoint="127.0.0.1:0", **{**params, "max_nodes": 2}))
