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

The last setting is the machine's own ceiling for two-way parallelism of this work: two plain one-process
commands side by side, each on the whole cohort into its own output (so 2 N and 4 N files, no Dask, nothing
shared but the machine). Whatever two Dask workers reach is bounded by it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY = ["--key", "benchmark-key-0123"]


def monai_anon(*commands: Sequence[object]) -> float:
    """Seconds until every command (``monai-anon`` arguments), all started at once, ended; raises when one did
    not end with exit code 0."""
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "monai_anon_app.cli", *map(str, args)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for args in commands]
    outputs = [proc.communicate()[0] for proc in procs]
    elapsed = time.perf_counter() - start
    for proc, output in zip(procs, outputs):
        if proc.returncode:
            raise RuntimeError(f"{proc.args} ended with exit code {proc.returncode}:\n{output}")
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--images-per-patient", type=int, default=5)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--commands", nargs="+", default=["deid", "anonymize"], choices=("deid", "anonymize"))
    # setting: (flags, processes side by side)
    settings = {"one process": ([], 1), "--workers 1": (["--workers", 1], 1), "--workers 2": (["--workers", 2], 1),
                "2 processes": ([], 2)}
    parser.add_argument("--settings", nargs="+", default=list(settings)[1:], choices=list(settings)[1:],
                        help="what to compare with one process (always run: it is the baseline)")
    args = parser.parse_args(argv)
    runs = {name: settings[name] for name in ["one process", *args.settings]}
    with tempfile.TemporaryDirectory() as tmp:
        cohorts = {}
        for scale in (1, 2):
            cohorts[scale] = Path(tmp) / f"in{scale}"
            monai_anon(("phantoms", cohorts[scale], "--patients", args.patients * scale, "--images-per-patient",
                        args.images_per_patient, "--size", args.size, "--format", "dicom", "--no-progress"))
        n = args.patients * args.images_per_patient
        print(f"{n} and {2 * n} DICOM files of {args.size}² px, {args.rounds} round(s), median; steady rate = "
              f"{n} / (T({2 * n}) - T({n})), start-up = 2 T({n}) - T({2 * n})")
        print(f"{'command':<10} {'setting':<12} {'files/s (2N)':>12} {'steady files/s':>15} {'start-up s':>11} "
              f"{'speed-up':>9}")
        for command in args.commands:
            extra = ["--seed", 1] if command == "anonymize" else []
            times: dict[tuple[str, int], list[float]] = {(name, s): [] for name in runs for s in cohorts}
            for _ in range(args.rounds):
                for name, (flags, side_by_side) in runs.items():  # interleaved: drift hits every setting alike
                    for scale, cohort in cohorts.items():
                        outs = [Path(tmp) / f"out{k}" for k in range(side_by_side)]
                        times[name, scale].append(monai_anon(*[(command, cohort, out, *KEY, *extra, "--no-progress",
                                                                *flags) for out in outs]))
                        for out in outs:
                            shutil.rmtree(out)
            med = {k: statistics.median(v) for k, v in times.items()}
            files = {name: n * side_by_side for name, (_, side_by_side) in runs.items()}
            steady = {name: files[name] / max(med[name, 2] - med[name, 1], 1e-9) for name in runs}
            for name in runs:
                fixed = 2 * med[name, 1] - med[name, 2]
                print(f"{command:<10} {name:<12} {2 * files[name] / med[name, 2]:>12.1f} {steady[name]:>15.1f} "
                      f"{fixed:>11.1f} {steady[name] / steady['one process']:>9.2f}")


if __name__ == "__main__":
    main()
