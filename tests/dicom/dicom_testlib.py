"""Helpers for the DICOM tests (imported by ``conftest.py`` and the test modules): the offline corpora,
the command line, dciodvfy, and (from ``tests/phi_fixture.py``) the PHI-planted fixture."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import warnings
from pathlib import Path

import pydicom
import pydicom.data
from peers import require_module
from phi_fixture import PHI_DATES, PHI_TOKENS, PRIVATE_CREATOR, build_phi_dataset, build_phi_radiograph

from monai_anon_app.cli import main

__all__ = ["KEY", "PHI_DATES", "PHI_TOKENS", "PRIVATE_CREATOR", "build_phi_dataset", "build_phi_radiograph",
           "dciodvfy_errors", "pydicom_data_files", "pydicom_test_files", "run_cli"]

KEY = "test-key-0123456789"


def pydicom_test_files() -> list[Path]:
    """pydicom's own test files, listed from its package folder (no network: pydicom's
    ``get_testdata_files()`` also queries external sources and the online file list)."""
    root = Path(pydicom.data.DATA_ROOT) / "test_files"
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".py")


def pydicom_data_files() -> list[Path]:
    """The ``pydicom-data`` package's files (its ``data_store`` folder), listed offline."""
    data_store = require_module("data_store", "pip install -e .[test] (pydicom-data)")
    return sorted(p for p in (Path(data_store.__file__).parent / "data").iterdir() if p.is_file())


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run ``monai-anon ARGV`` in-process with the real ``monai_anon_app.cli.main``; return (exit code, stdout,
    stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse errors
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()



_ERROR = re.compile(r"(^|\s)Error - ")
_NORMALISE = [
    (re.compile(r"= <[^>]*>"), "= <>"),  # values
    (re.compile(r"\[\d+\]"), "[]"),  # value indices
    (re.compile(r"(UID) \S+"), r"\1 <uid>"),
    (re.compile(r"\d+(\.\d+){2,}"), "<uid>"),  # UIDs are replaced by design
    (re.compile(r"\(0x[0-9a-f]+\)\s*$"), ""),  # byte offsets
    (re.compile(r"^\(0x[0-9a-f]{4},0x[0-9a-f]{4}\)\s*\?\s*-?\s*(Error - Tag read failed)"), r"\1"),  # garbage tag
]


def dciodvfy_errors(path: Path) -> set[str]:
    """Normalised error lines of ``dciodvfy`` (it reports on stderr and exits 0 even on errors)."""
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace", timeout=120)
    lines = set()
    for line in (proc.stderr + proc.stdout).splitlines():
        if not _ERROR.search(line):
            continue
        for pattern, repl in _NORMALISE:
            line = pattern.sub(repl, line)
        lines.add(" ".join(line.split()))
    return lines
