"""Model speed on CPU, each figure printed with a baseline measured in the same run.

* encode+decode latency per image vs. a bare encoder forward pass (same batch of one);
* anonymize throughput (images/s, full mode, batch of one as the API serves it) vs. encode+decode;
* training steps/s vs. a bare encoder+generator forward/backward on the same batch.

Usage::

    .venv/bin/python benchmarks/bench_model.py [--model models/phantom-cxr] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch


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


def main() -> None:
    from monai_anon_app.data.datasets import from_cohort
    from monai_anon_app.data.phantoms import Cohort
    from monai_anon_app.inference import Anonymizer, resolve_model
    from monai_anon_app.training.config import TrainConfig
    from monai_anon_app.training.disentangler import DisentanglerTrainer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--train-steps", type=int, default=10)
    args = ap.parse_args()

    anon = Anonymizer.load(resolve_model(args.model))
    size = anon.image_size
    print(f"model {resolve_model(args.model)} ({size} px), torch threads {torch.get_num_threads()}")
    x = torch.from_numpy(Cohort(1, 1, seed=123).case(0, 0).image(size))[None, None]
    pixels = Cohort(1, 1, seed=124).case(0, 0).image(512) * 4095

    with torch.no_grad():
        t_enc = timed(lambda: anon.model.encoder(x), args.repeats)
        t_encdec = timed(lambda: anon.model.generator(anon.model.encoder(x)), args.repeats)
    t_anon = timed(lambda: anon.anonymize(pixels, seed=1), args.repeats)
    print(f"encoder forward (baseline)        {1e3 * t_enc:8.2f} ms/image")
    print(f"encode+decode                     {1e3 * t_encdec:8.2f} ms/image   ratio {t_encdec / t_enc:5.2f} × encoder")
    print(f"anonymize 512×512 (API, full)     {1 / t_anon:8.2f} images/s  "
          f"ratio {t_anon / t_encdec:5.2f} × encode+decode")

    cfg = TrainConfig(steps=10**6, patients_per_batch=4, images_per_patient=4, swap_start=0, adversarial_start=0,
                      checkpoint_every=10**9, model=anon.config.model)
    data = from_cohort(Cohort(16, 4, seed=125), size)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        trainer = DisentanglerTrainer(cfg, data, tmp)
        m = trainer.model
        batch = torch.from_numpy(data.images[:16]).unsqueeze(1)

        def bare() -> None:
            out = m.generator(m.encoder(batch))
            m.zero_grad()
            out.mean().backward()

        t_bare = timed(bare, args.train_steps, warmup=2)
        t_step = timed(trainer.train_step, args.train_steps, warmup=2)
    print(f"encoder+generator fwd/bwd (base)  {1 / t_bare:8.2f} steps/s (batch 16)")
    print(f"full training step                {1 / t_step:8.2f} steps/s   ratio {t_step / t_bare:5.2f} × baseline")


if __name__ == "__main__":
    main()
