"""Training speed on several processes (torch DDP, gloo on the CPU) against one process, in the same run.

Both figures run the real trainer (``DisentanglerTrainer``, every loss on: swaps, frozen finding judge, crop
discriminator) on the same global batch (``--patients`` × ``--images`` images a step) under torchrun: one
process with all the cores' threads, then ``--nproc`` ranks with an equal share of the threads each, each
training on its share of every step's patients and averaging gradients across ranks. Steps/s are timed between
two barriers after ``--warmup`` steps; the ratio > 1 means DDP is faster. Start-up (imports, the judge) is not
timed.

Usage::

    .venv/bin/python benchmarks/bench_ddp.py [--nproc 2] [--size 64] [--steps 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from monai_anon_app.data.datasets import from_cohort
from monai_anon_app.data.phantoms import Cohort
from monai_anon_app.modelfolder.config import FindingJudgeConfig, load_config
from monai_anon_app.training.distributed import init_process_group
from monai_anon_app.training.fit import CONFIG_DIR
from monai_anon_app.training.trainer import DisentanglerTrainer

RESULT = "@bench-ddp "


def worker(args: argparse.Namespace) -> None:
    """One rank (torchrun sets the environment): time ``args.steps`` training steps, rank 0 prints the result."""
    ranks = init_process_group()
    cfg = load_config(CONFIG_DIR / "default.yaml", steps=10**6, patients_per_batch=args.patients,
                      images_per_patient=args.images, swap_start=0, adversarial_start=0, checkpoint_every=10**9,
                      threads=args.threads)
    cfg.model.image_size = args.size
    cfg.model.__post_init__()
    cfg.judge = FindingJudgeConfig(steps=2, channels=cfg.judge.channels)
    data = from_cohort(Cohort(2 * args.patients, args.images, seed=125), args.size)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = DisentanglerTrainer(cfg, data, tmp)
        for _ in range(args.warmup):
            trainer.train_step()
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        dist.barrier()
        seconds = time.perf_counter() - t0
    if ranks.main:
        print(RESULT + json.dumps({"steps_per_s": args.steps / seconds, "threads": torch.get_num_threads(),
                                   "local_images": len(trainer.batch)}), flush=True)
    dist.destroy_process_group()


def measure(nproc: int, threads: int, args: argparse.Namespace) -> dict:
    """Run the worker on ``nproc`` ranks with ``threads`` torch threads each; rank 0's result."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(Path(__file__).resolve()), "--worker", "--threads", str(threads), "--size", str(args.size),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--patients", str(args.patients),
           "--images", str(args.images)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    lines = [line for line in r.stdout.splitlines() if line.startswith(RESULT)]
    if r.returncode != 0 or not lines:
        raise SystemExit(f"{nproc} process(es) failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=2, help="DDP ranks to compare with one process")
    ap.add_argument("--size", type=int, default=64, help="image size of the shipped architecture")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--patients", type=int, default=8, help="patients per (global) batch")
    ap.add_argument("--images", type=int, default=4, help="images per patient")
    ap.add_argument("--rounds", type=int, default=1, help="alternating measurements of each; the median counts")
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    cores = os.cpu_count() or 1
    per_rank = max(1, cores // args.nproc)
    print(f"{cores} cores; global batch {args.patients} patients × {args.images} images, {args.size} px, "
          f"{args.steps} timed steps after {args.warmup}")
    one, many = [], []
    for _ in range(args.rounds):
        one.append(measure(1, cores, args)["steps_per_s"])
        many.append(measure(args.nproc, per_rank, args)["steps_per_s"])
    s1, sn = statistics.median(one), statistics.median(many)
    print(f"1 process ({cores} threads)               {s1:8.3f} steps/s  (baseline)")
    print(f"{args.nproc} DDP ranks, gloo ({per_rank} thread(s) each)  {sn:8.3f} steps/s  "
          f"ratio {sn / s1:5.2f} × one process")


if __name__ == "__main__":
    main()
