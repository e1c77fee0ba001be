"""Files/s of ``monai-anon deid`` and ``monai-anon anonymize`` in one process vs on Dask (``--workers 1``,
``--workers 2``), as ratios to the one-process run measured in the same command.

Usage::

    .venv/bin/python benchmarks/bench_batch.py [--patients 60] [--images-per-patient 5] [--size 128] [--rounds 1]

Each run is the real command in a subprocess, so the figures include what a user waits for: start-up, the
embedded cluster's start, the imports and the model's load on each worker. Two phantom DICOM cohorts are
written, of N and 2N files; from the two times of each setting the benchmark separates the fixed cost
(start-up: ``2 T(N) - T(2N)``) from the steady rate (``N / (T(2N) - T(N))`` files/s), which is what an
archive of 100 000 files sees. Runs are interleaved round by round and the median round is used. Speed-up =
rate(setting) / rate(one process): higher is better; targets ≤ 1.2× overhead at one worker (speed-up ≥ 0.83)
and ≥ 1.7× at two.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY = ["--key", "benchmark-key-0123"]


def monai_anon(*args: object) -> float:
    """Seconds the command took; raises when it did not end with exit code 0."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "monai_anon_app.cli", *map(str, args)], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--images-per-patient", type=int, default=5)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--commands", nargs="+", default=["deid", "anonymize"], choices=("deid", "anonymize"))
    args = parser.parse_args(argv)
    runs = {"one process": [], "--workers 1": ["--workers", 1], "--workers 2": ["--workers", 2]}
    with tempfile.TemporaryDirectory() as tmp:
        cohorts = {}
        for scale in (1, 2):
            cohorts[scale] = Path(tmp) / f"in{scale}"
            monai_anon("phantoms", cohorts[scale], "--patients", args.patients * scale, "--images-per-patient",
                       args.images_per_patient, "--size", args.size, "--format", "dicom", "--no-progress")
        n = args.patients * args.images_per_patient
        print(f"{n} and {2 * n} DICOM files of {args.size}² px, {args.rounds} round(s), median; steady rate = "
              f"{n} / (T({2 * n}) - T({n})), start-up = 2 T({n}) - T({2 * n})")
        print(f"{'command':<10} {'setting':<12} {'files/s (2N)':>12} {'steady files/s':>15} {'start-up s':>11} "
              f"{'speed-up':>9}")
        for command in args.commands:
            extra = ["--seed", 1] if command == "anonymize" else []
            times: dict[tuple[str, int], list[float]] = {(name, s): [] for name in runs for s in cohorts}
            for _ in range(args.rounds):
                for name, flags in runs.items():  # interleaved, so drift hits every setting alike
                    for scale, cohort in cohorts.items():
                        out = Path(tmp) / "out"
                        times[name, scale].append(monai_anon(command, cohort, out, *KEY, *extra, "--no-progress",
                                                             *flags))
                        shutil.rmtree(out)
            med = {k: statistics.median(v) for k, v in times.items()}
            steady = {name: n / max(med[name, 2] - med[name, 1], 1e-9) for name in runs}
            for name in runs:
                fixed = 2 * med[name, 1] - med[name, 2]
                print(f"{command:<10} {name:<12} {2 * n / med[name, 2]:>12.1f} {steady[name]:>15.1f} {fixed:>11.1f} "
                      f"{steady[name] / steady['one process']:>9.2f}")


if __name__ == "__main__":
    main()
