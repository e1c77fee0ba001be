"""Ranks of a torch DDP training and the collectives the trainer needs (gloo on CPU, NCCL with one GPU a rank).

The trainer averages each optimiser's gradients itself (:func:`average_gradients`, one flattened all-reduce per
optimiser and step) instead of wrapping its networks in ``DistributedDataParallel``: a step calls the encoder,
generator and heads one by one and through ``functional_call`` (never ``model.forward``, which is where DDP
prepares its reducer), runs two backward passes through the discriminator (the generator's adversarial term,
whose discriminator gradients are thrown away, and the discriminator's own loss), and leaves parameters unused
before ``swap_start`` and ``adversarial_start``. The averaged gradients are those DDP would produce; what is
lost is DDP's overlap of communication with the backward pass, which matters little at these model sizes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = ["TIMEOUT", "Ranks", "all_gather_objects", "average_gradients", "average_values", "broadcast_module",
           "broadcast_tensors", "current_ranks", "init_process_group", "rank_seed"]

#: how long a collective waits for the other ranks; rank 0 trains the frozen finding judge alone while the
#: others wait for its weights (about a minute at the default config on two CPU cores)
TIMEOUT = timedelta(hours=1)


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


def current_ranks() -> Ranks:
    """The ranks of the initialised process group, or a single process on the CPU when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    return Ranks(dist.get_rank(), dist.get_world_size(), device)


def init_process_group() -> Ranks:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_*``):
    NCCL with GPU ``LOCAL_RANK`` when CUDA is available, gloo on the CPU otherwise."""
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl", timeout=TIMEOUT)
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    return current_ranks()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a rank's own random stream (crops, augmentations, swap partners): ``seed`` itself on rank 0,
    so that one process trains exactly as before."""
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
