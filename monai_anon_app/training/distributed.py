"""Ranks of a torch DDP training and the collectives the trainer needs (gloo on CPU, NCCL with one GPU a rank).

The trainer averages each optimiser's gradients itself (:func:`average_gradients`, one flattened all-reduce per
optimiser and step) instead of wrapping its networks in ``DistributedDataParallel``: a step calls the encoder,
generator and heads one by one and through ``functional_call`` (never ``model.forward``, which is where DDP
prepares its reducer), runs two backward passes through the discriminator (the generator's adversarial term,
whose discriminator gradients are thrown away, and the discriminator's own loss), and leaves parameters unused
before ``swap_start`` and ``adversarial_start``. The averaged gradients are those DDP would produce; what is
lost is DDP's overlap of communication with the backward pass, which matters little at these model sizes.

The ranks meet through :class:`LoopbackRendezvous`, torchrun's rendezvous for one machine whose store listens on
127.0.0.1 only (``python -m monai_anon_app.training.distributed`` is torchrun with it; see
:mod:`~monai_anon_app.training.launch`, which also holds gloo and NCCL to the loopback interface).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed import PrefixStore, TCPStore
from torch.distributed.elastic.rendezvous import (
    RendezvousHandler,
    RendezvousInfo,
    RendezvousParameters,
    RendezvousStoreInfo,
    rendezvous_handler_registry,
)
from torch.distributed.elastic.rendezvous.utils import parse_rendezvous_endpoint
from torch.distributed.run import main as torchrun_main

__all__ = ["LOOPBACK", "RDZV_BACKEND", "TIMEOUT", "LoopbackRendezvous", "Ranks", "all_gather_objects",
           "average_gradients", "average_values", "broadcast_module", "broadcast_tensors",
           "create_loopback_rendezvous", "current_ranks", "init_process_group", "rank_seed", "torchrun"]

#: how long a collective waits for the other ranks; rank 0 trains the frozen finding judge alone while the
#: others wait for its weights (about a minute at the default config on two CPU cores)
TIMEOUT = timedelta(hours=1)
LOOPBACK = "127.0.0.1"
#: the name :func:`torchrun` registers :class:`LoopbackRendezvous` under (``--rdzv-backend``)
RDZV_BACKEND = "monai-anon-loopback"
#: how long the agent's store waits for an answer (as long as torchrun's static rendezvous)
STORE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class Ranks:
    """This process's ``rank`` among ``world`` training processes and the device it trains on."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes checkpoints, the model folder and the progress bar."""
        return self.rank == 0


class LoopbackRendezvous(RendezvousHandler):
    """torchrun's rendezvous for the ranks of one machine: the agent's TCPStore, which the workers share
    (``MASTER_ADDR``, ``MASTER_PORT``), listens on 127.0.0.1:``port`` (0: a free port the system picks).
    ``TCPStore`` binds every interface when it opens its socket itself, so it is given one already bound
    (``master_listen_fd``)."""

    def __init__(self, run_id: str, port: int = 0, timeout: timedelta = STORE_TIMEOUT):
        self.run_id = run_id
        self.port = port
        self.timeout = timeout
        self._store: TCPStore | None = None

    def get_backend(self) -> str:
        return RDZV_BACKEND

    @property
    def use_agent_store(self) -> bool:
        return True

    def next_rendezvous(self) -> RendezvousInfo:
        if self._store is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((LOOPBACK, self.port))
                self._store = TCPStore(LOOPBACK, sock.getsockname()[1], 1, True, self.timeout,
                                       master_listen_fd=sock.fileno())
            except BaseException:
                sock.close()
                raise
            sock.detach()  # the store listens on it from now on: Python must not close it
        return RendezvousInfo(PrefixStore(self.run_id, self._store), 0, 1,
                              RendezvousStoreInfo(LOOPBACK, self._store.port))

    def is_closed(self) -> bool:
        return False

    def set_closed(self) -> None:
        pass

    def num_nodes_waiting(self) -> int:
        return 0

    def get_run_id(self) -> str:
        return self.run_id

    def shutdown(self) -> bool:
        return True


def create_loopback_rendezvous(params: RendezvousParameters) -> RendezvousHandler:
    """``--rdzv-backend=monai-anon-loopback --rdzv-endpoint=127.0.0.1:PORT --nnodes=1``."""
    host, port = parse_rendezvous_endpoint(params.endpoint or f"{LOOPBACK}:0", default_port=0)
    if host != LOOPBACK:
        raise ValueError(f"the {RDZV_BACKEND} rendezvous listens on {LOOPBACK}, not {host!r}")
    if params.max_nodes != 1:
        raise ValueError(f"the {RDZV_BACKEND} rendezvous runs on one machine (--nnodes=1), not {params.max_nodes}")
    return LoopbackRendezvous(params.run_id, port)


def torchrun(argv: Sequence[str]) -> None:
    """torchrun (``torch.distributed.run``) with ``--rdzv-backend=`` :data:`RDZV_BACKEND` available; what
    ``python -m monai_anon_app.training.distributed ARGS`` runs (this module imports little: the agent trains
    nothing)."""
    rendezvous_handler_registry.register(RDZV_BACKEND, create_loopback_rendezvous)
    torchrun_main(list(argv))


def current_ranks() -> Ranks:
    """The ranks of the initialised process group, or a single process on the CPU when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    return Ranks(dist.get_rank(), dist.get_world_size(), device)


def init_process_group() -> Ranks:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_*``):
    NCCL with GPU ``LOCAL_RANK`` when CUDA is available, gloo on the CPU otherwise (on the interface that
    ``NCCL_SOCKET_IFNAME`` or ``GLOO_SOCKET_IFNAME`` names: the loopback interface under
    :func:`~monai_anon_app.training.launch.launch`)."""
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl", timeout=TIMEOUT)
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    return current_ranks()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a rank's own random stream (crops, augmentations, swap partners): ``seed`` itself on rank 0,
    so that a single process (rank 0 of 1) draws the stream of ``seed``."""
    return seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def average_gradients(params: Iterable[nn.Parameter], weight: float) -> None:
    """Replace every gradient by the sum over ranks of ``weight × gradient`` (each rank's ``weight`` is its
    share of the global batch, so the weights add up to 1). One all-reduce of a flattened buffer. A parameter
    without a gradient on every rank keeps none (the optimiser skips it, as it would in one process); one with a
    gradient on some ranks only counts zero on the others (as DDP does with unused parameters)."""
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    flat = torch.cat([(p.grad.reshape(-1) * weight) if p.grad is not None else p.new_zeros(p.numel())
                      for p in params]
                     + [torch.tensor([float(p.grad is not None) for p in params], device=params[0].device,
                                     dtype=params[0].dtype)])
    dist.all_reduce(flat)
    has = flat[-len(params):].tolist()
    offset = 0
    for p, any_rank in zip(params, has, strict=True):
        n = p.numel()
        if any_rank > 0:
            grad = flat[offset: offset + n].view_as(p)
            if p.grad is None:
                p.grad = grad.clone()
            else:
                p.grad.copy_(grad)
        offset += n


def average_values(values: dict[str, float], weight: float, device: str) -> dict[str, float]:
    """``values`` (the same keys on every rank) as the ``weight``-weighted sum over ranks."""
    keys = sorted(values)
    t = torch.tensor([values[k] * weight for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    summed = dict(zip(keys, t.tolist(), strict=True))
    return {k: summed[k] for k in values}


def broadcast_tensors(tensors: Sequence[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` (in place, same shapes on every rank) with rank ``src``'s, in one broadcast per
    dtype."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for dtype, group in by_dtype.items():
        wire = torch.uint8 if dtype == torch.bool else dtype  # gloo sends no bool tensors
        flat = torch.cat([t.detach().reshape(-1).to(wire) for t in group])
        dist.broadcast(flat, src)
        offset = 0
        for t in group:
            with torch.no_grad():
                t.copy_(flat[offset: offset + t.numel()].view_as(t).to(dtype))
            offset += t.numel()


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Every parameter and buffer of ``module`` as rank ``src`` has them."""
    broadcast_tensors(list(module.state_dict(keep_vars=False).values()), src)


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order."""
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


if __name__ == "__main__":
    torchrun(sys.argv[1:])
