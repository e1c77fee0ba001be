"""Throughput of ``monai-anon deid`` as a ratio to a plain pydicom read+write round trip.

Usage::

    .venv/bin/python benchmarks/bench_deid.py [--rounds 7] [--out /dev/shm]
    PYTHONPATH=/path/to/dicognito-0.17.0 .venv/bin/python benchmarks/bench_deid.py   # adds dicognito

For each corpus (pydicom's test files, the pydicom-data files) it times, on the same files and in the
same run, interleaved round by round:

* ``pydicom``: ``dcmread(f, force=True)`` then ``save_as(out)`` — the 1.0 reference;
* ``monai-anon deid``: what the command does per file (sniff, read, de-identify, atomic write);
* ``dicognito`` (only when importable; 0.17.0 is the last release for pydicom 2.x).

Only files every method can process are timed (broken inputs are counted and left out). The median
round is reported as files/s, and the ratio is time(method) / time(round trip): lower is better.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
import pydicom.data

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monai_anon_app.dicom.files import is_dicom  # noqa: E402
from monai_anon_app.dicom.options import DeidOptions  # noqa: E402
from monai_anon_app.dicom.pixel_change import KEPT  # noqa: E402
from monai_anon_app.dicom.process import process_dicom  # noqa: E402


def corpora() -> dict[str, list[Path]]:
    out = {"pydicom test files": sorted(p for p in (Path(pydicom.data.DATA_ROOT) / "test_files").rglob("*")
                                        if p.is_file() and p.suffix != ".py")}
    try:
        import data_store

        out["pydicom-data"] = sorted(p for p in (Path(data_store.__file__).parent / "data").iterdir() if p.is_file())
    except ImportError:
        print("pydicom-data is not installed: skipping that corpus", file=sys.stderr)
    return out


def methods(dst: Path) -> dict[str, Callable[[Path], None]]:
    options = DeidOptions(key=b"benchmark-key-0123")

    def roundtrip(src: Path) -> None:
        pydicom.dcmread(str(src), force=True).save_as(str(dst))

    def deid(src: Path) -> None:
        if is_dicom(src):
            process_dicom(src, dst, options, None, KEPT)

    out = {"pydicom read+write": roundtrip, "monai-anon deid": deid}
    try:
        from dicognito.anonymizer import Anonymizer

        anonymizer = Anonymizer(seed="benchmark")

        def dicognito(src: Path) -> None:
            ds = pydicom.dcmread(str(src), force=True)
            anonymizer.anonymize(ds)
            ds.save_as(str(dst))

        out["dicognito 0.17"] = dicognito
    except ImportError:
        pass
    return out


def usable(files: list[Path], fns: dict[str, Callable[[Path], None]]) -> list[Path]:
    ok = []
    for f in files:
        if not is_dicom(f):
            continue
        try:
            for fn in fns.values():
                fn(f)
        except Exception:
            continue
        ok.append(f)
    return ok


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None,
                        help="folder for the output file (default: /dev/shm, a RAM disk, when present)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        fns = methods(Path(tmp) / "out.dcm")
        names = list(fns)
        print(f"python {sys.version.split()[0]}, pydicom {pydicom.__version__}, {args.rounds} rounds, median round")
        print(f"{'corpus':<20} {'files':>5} {'MB':>6}  " + "  ".join(f"{n + ' files/s':>26}" for n in names)
              + "  " + "  ".join(f"{'ratio ' + n:>22}" for n in names[1:]))
        for corpus, files in corpora().items():
            ok = usable(files, fns)
            size = sum(f.stat().st_size for f in ok) / 1e6
            times: dict[str, list[float]] = {n: [] for n in names}
            for _ in range(args.rounds):
                for name in names:  # interleaved, so drift hits every method alike
                    fn = fns[name]
                    start = time.perf_counter()
                    for f in ok:
                        fn(f)
                    times[name].append(time.perf_counter() - start)
            med = {n: statistics.median(t) for n, t in times.items()}
            base = med[names[0]]
            print(f"{corpus:<20} {len(ok):>5} {size:>6.1f}  "
                  + "  ".join(f"{len(ok) / med[n]:>26.1f}" for n in names)
                  + "  " + "  ".join(f"{med[n] / base:>22.2f}" for n in names[1:])
                  + f"   ({len(files) - len(ok)} files left out)")
    if "dicognito 0.17" not in names:
        print("dicognito is not importable: install dicognito==0.17.0 (e.g. into a --target folder on PYTHONPATH)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
