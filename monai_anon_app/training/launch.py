"""Start a training on several processes with torchrun and relay its progress (``train_model(..., nproc=N)``).

:func:`launch` runs ``python -m monai_anon_app.training.distributed --rdzv-backend=monai-anon-loopback
--rdzv-endpoint=127.0.0.1:0 --nnodes=1 --nproc-per-node=N -m monai_anon_app.training.ddp_worker CONFIG OUT``:
torchrun (``torch.distributed.run``) with the rendezvous of
:class:`~monai_anon_app.training.distributed.LoopbackRendezvous`, so that every socket of the run listens on
127.0.0.1 only. torchrun's own rendezvous backends (``--standalone``, ``c10d``, ``static``) open a TCPStore that
listens on every interface whatever address they are given; ``LoopbackRendezvous`` hands the store a socket
bound to 127.0.0.1, and ``GLOO_SOCKET_IFNAME`` and ``NCCL_SOCKET_IFNAME`` hold the ranks' own connections to the
loopback interface. Each worker joins the process group (NCCL with one GPU a rank when CUDA is available, gloo
on the CPU otherwise) and runs :func:`~monai_anon_app.training.fit.train_model`; rank 0 prints one
``PROGRESS_PREFIX`` line of JSON per step, which :func:`launch` turns back into
:class:`~monai_anon_app.training.trainer.StepLog` calls of ``on_step``; every other line is passed through. The
workers' standard error (rank 0's progress bar, warnings, errors) goes where this process's goes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import psutil
import torch

from monai_anon_app.modelfolder.config import TrainConfig
from monai_anon_app.training.distributed import LOOPBACK, RDZV_BACKEND
from monai_anon_app.training.trainer import CHECKPOINT, StepLog, check_resumable, checkpoint_world_size

__all__ = ["PROGRESS_PREFIX", "WORKER", "TrainingFailed", "launch", "loopback_interface", "progress_line",
           "torchrun_command"]

WORKER = "monai_anon_app.training.ddp_worker"
PROGRESS_PREFIX = "@monai-anon-train-step "
#: seconds torchrun gets to end its workers after SIGTERM before it is killed
STOP_GRACE_S = 30


class TrainingFailed(RuntimeError):
    """The training processes ended with an error (their messages went to standard error)."""


def progress_line(log: StepLog) -> str:
    """What rank 0 prints for one step (read back by :func:`launch`)."""
    return PROGRESS_PREFIX + json.dumps({"step": log.step, "losses": log.losses, "seconds": log.seconds})


def loopback_interface() -> str:
    """The name of the network interface that holds 127.0.0.1 (``lo`` on Linux, ``lo0`` on macOS)."""
    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == LOOPBACK for a in addrs):
            return name
    return "lo"


def torchrun_command(nproc: int, config: Path, out: Path, progress: bool) -> list[str]:
    return [sys.executable, "-m", "monai_anon_app.training.distributed", f"--rdzv-backend={RDZV_BACKEND}",
            f"--rdzv-endpoint={LOOPBACK}:0", "--nnodes=1", f"--nproc-per-node={nproc}",
            "-m", WORKER, str(config), str(out), *([] if progress else ["--no-progress"])]


def launch(cfg: TrainConfig, out_dir: str | Path, nproc: int, progress: bool = True,
           on_step: Callable[[StepLog], None] | None = None,
           should_stop: Callable[[], bool] | None = None) -> Path:
    """Train ``cfg`` into ``out_dir`` on ``nproc`` processes; returns ``out_dir`` when they have finished
    (or, when ``should_stop`` said so after a step, once they have been stopped: the checkpoint resumes it).

    Raises :class:`TrainingFailed` when a worker fails, ``ValueError`` when ``nproc`` does not fit the machine or
    the checkpoint in ``out_dir`` (written by another number of processes).
    """
    if nproc < 2:
        raise ValueError(f"launch needs at least 2 processes, not {nproc}")
    if torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise ValueError(f"{nproc} processes need {nproc} GPUs (one each); this machine has "
                         f"{torch.cuda.device_count()} (set CUDA_VISIBLE_DEVICES= to train on the CPU)")
    out = Path(out_dir)
    written_by = checkpoint_world_size(out)
    if written_by is not None:  # say so here, not once per rank
        check_resumable(out / CHECKPOINT, written_by, nproc)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # torchrun would set 1; give every rank its share of the cores instead
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # the ranks' gloo (CPU) or NCCL (GPU) connections listen on the loopback interface, not the hostname's address
    interface = loopback_interface()
    env.update(GLOO_SOCKET_IFNAME=interface, NCCL_SOCKET_IFNAME=f"={interface}")
    stopped = False
    with tempfile.TemporaryDirectory(prefix="monai-anon-ddp-") as tmp:
        config = Path(tmp) / "config.yaml"
        cfg.save(config)  # the workers start in this directory: a relative data folder means the same there
        proc = subprocess.Popen(torchrun_command(nproc, config, out, progress), stdout=subprocess.PIPE, text=True,
                                bufsize=1, env=env)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if not line.startswith(PROGRESS_PREFIX):
                    sys.stdout.write(line)
                    sys.stdout.flush()
                    continue
                if on_step is not None:
                    on_step(StepLog(**json.loads(line[len(PROGRESS_PREFIX):])))
                if should_stop is not None and should_stop():
                    stopped = True
                    break
        except BaseException:  # interrupted (Ctrl-C), or on_step failed: the workers end too
            _stop(proc)
            raise
        if stopped:
            _stop(proc)
        code = proc.wait()
        proc.stdout.close()
    if not stopped and code != 0:
        raise TrainingFailed(f"training on {nproc} processes failed (torchrun exit code {code}); the messages "
                             f"above say why")
    return out


def _stop(proc: subprocess.Popen) -> None:
    """End torchrun and its workers (torchrun passes SIGTERM on to them)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    if proc.stdout is not None:
        proc.stdout.close()  # nobody reads on: a worker's last words must not block on a full pipe
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
