"""Model speed on CPU, each figure printed with a baseline measured in the same run.

* encode+decode latency per image vs. a bare encoder forward pass (same batch of one);
* anonymize throughput (images/s, full mode, batch of one as the API serves it) vs. encode+decode;
* training steps/s vs. a bare encoder+generator forward/backward on the same batch;
* the same encode+decode and training figures for the shipped architecture at other image sizes
  (``--sizes``, untrained weights: speed does not depend on them), each against its own baseline.

Usage::

    .venv/bin/python benchmarks/bench_model.py [--model models/phantom-cxr] [--repeats 30] [--sizes 64 128]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

from monai_anon_app.data.datasets import from_cohort
from monai_anon_app.data.phantoms import Cohort
from monai_anon_app.inference import Anonymizer
from monai_anon_app.modelfolder.config import TrainConfig
from monai_anon_app.modelfolder.registry import resolve_model
from monai_anon_app.networks import DisentanglementModel
from monai_anon_app.training.finding_judge import FindingJudgeConfig
from monai_anon_app.training.trainer import DisentanglerTrainer


def timed(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def training_speed(model_cfg, steps: int) -> tuple[float, float]:
    """Seconds per bare encoder+generator forward/backward and per full training step (batch 16)."""
    size = model_cfg.image_size
    cfg = TrainConfig(steps=10**6, patients_per_batch=4, images_per_patient=4, swap_start=0, adversarial_start=0,
                      checkpoint_every=10**9, model=model_cfg, judge=FindingJudgeConfig(steps=2))
    data = from_cohort(Cohort(16, 4, seed=125), size)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = DisentanglerTrainer(cfg, data, tmp)
        m = trainer.model
        batch = torch.from_numpy(data.images[:16]).unsqueeze(1)

        def bare() -> None:
            out = m.generator(m.encoder(batch))
            m.zero_grad()
            out.mean().backward()

        return timed(bare, steps, warmup=2), timed(trainer.train_step, steps, warmup=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--sizes", type=int, nargs="*", default=[64, 128],
                    help="image sizes for the architecture figures (untrained weights)")
    args = ap.parse_args()

    anon = Anonymizer.load(resolve_model(args.model))
    size = anon.image_size
    print(f"model {resolve_model(args.model)} ({size} px), torch threads {torch.get_num_threads()}")
    pixels = Cohort(1, 1, seed=124).case(0, 0).image(512) * 4095
    x = torch.from_numpy(Cohort(1, 1, seed=123).case(0, 0).image(size))[None, None]
    with torch.no_grad():
        t_encdec = timed(lambda: anon.model.generator(anon.model.encoder(x)), args.repeats)
    t_anon = timed(lambda: anon.anonymize(pixels, seed=1), args.repeats)
    print(f"anonymize 512×512 (API, full)     {1 / t_anon:8.2f} images/s  "
          f"ratio {t_anon / t_encdec:5.2f} × encode+decode")
    for s in args.sizes:
        size_speed(dataclasses.replace(anon.config.model, image_size=s), len(anon.classes), args)


def size_speed(mcfg, n_classes: int, args: argparse.Namespace) -> None:
    """Print encode+decode and training figures of an untrained model of configuration ``mcfg``."""
    s = mcfg.image_size
    m = DisentanglementModel(mcfg, n_classes, 8).eval()
    xs = torch.from_numpy(Cohort(1, 1, seed=123).case(0, 0).image(s))[None, None]
    with torch.no_grad():
        t_enc = timed(lambda: m.encoder(xs), args.repeats)
        t_ed = timed(lambda: m.generator(m.encoder(xs)), args.repeats)
    t_bare, t_step = training_speed(mcfg, args.train_steps)
    print(f"[{s} px] encoder forward (baseline) {1e3 * t_enc:8.2f} ms/image")
    print(f"[{s} px] encode+decode              {1e3 * t_ed:8.2f} ms/image   ratio {t_ed / t_enc:5.2f} × encoder")
    print(f"[{s} px] enc+gen fwd/bwd (baseline) {1 / t_bare:8.2f} steps/s (batch 16)")
    print(f"[{s} px] full training step         {1 / t_step:8.2f} steps/s   ratio {t_step / t_bare:5.2f} × baseline")


if __name__ == "__main__":
    main()
