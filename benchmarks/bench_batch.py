"""Files/s of ``monai-anon deid`` and ``monai-anon anonymize`` in one process vs on Dask (``--workers 1``,
``--workers 2``), as ratios to the one-process run measured in the same command.

Usage::

    .venv/bin/python benchmarks/bench_batch.py [--patients 40] [--images-per-patient 5] [--size 256] [--rounds 3]

Each run is the real command in a subprocess, so the figures include what a user waits for: start-up,
the embedded cluster's start, the model's load on each worker. A phantom DICOM cohort is written once;
runs are interleaved round by round and the median round is reported. The speed-up is
time(one process) / time(run): higher is better; targets ≤ 1.2× overhead at one worker (speed-up ≥ 0.83)
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
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--images-per-patient", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--commands", nargs="+", default=["deid", "anonymize"], choices=("deid", "anonymize"))
    args = parser.parse_args(argv)
    runs = {"one process": [], "--workers 1": ["--workers", 1], "--workers 2": ["--workers", 2]}
    with tempfile.TemporaryDirectory() as tmp:
        cohort = Path(tmp) / "in"
        monai_anon("phantoms", cohort, "--patients", args.patients, "--images-per-patient", args.images_per_patient,
                   "--size", args.size, "--format", "dicom", "--no-progress")
        n = args.patients * args.images_per_patient
        print(f"{n} DICOM files of {args.size}² px, {args.rounds} rounds, median round; speed-up = time(one "
              "process) / time(run)")
        print(f"{'command':<10} " + "  ".join(f"{name + ' files/s':>22}" for name in runs)
              + "  " + "  ".join(f"{'speed-up ' + name:>22}" for name in list(runs)[1:]))
        for command in args.commands:
            extra = ["--seed", 1] if command == "anonymize" else []
            times: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(args.rounds):
                for name, flags in runs.items():  # interleaved, so drift hits every setting alike
                    out = Path(tmp) / "out"
                    times[name].append(monai_anon(command, cohort, out, *KEY, *extra, "--no-progress", *flags))
                    shutil.rmtree(out)
            med = {name: statistics.median(t) for name, t in times.items()}
            base = med["one process"]
            print(f"{command:<10} " + "  ".join(f"{n / med[name]:>22.1f}" for name in runs)
                  + "  " + "  ".join(f"{base / med[name]:>22.2f}" for name in list(runs)[1:]))


if __name__ == "__main__":
    main()
