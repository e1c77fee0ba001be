"""The whole offline corpus (pydicom's test files and pydicom-data) through ``monai-anon deid``."""

from __future__ import annotations

import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from dicom_testlib import KEY
from peers import DEBIAN, require_program

from monai_anon_app.dicom.files import is_dicom

# inputs that are broken on purpose in the corpora: they must fail with a reason, never abort the batch
BROKEN_REASONS = re.compile(r"is truncated|has no SOP Class UID|is not readable DICOM")


@pytest.mark.slow
def test_corpus_through_deid_adds_no_dciodvfy_error(tmp_path, corpus, cli, dciodvfy):
    src, dst = tmp_path / "in", tmp_path / "out"
    inputs = []
    for name, files in corpus.items():
        base = os.path.commonpath([str(f) for f in files])
        for f in files:
            link = src / name / os.path.relpath(f, base)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f)
            inputs.append(link)
    assert len(inputs) > 220
    # --keep-names: the corpus holds one instance in several encodings (one SOP Instance UID), and each of
    # them must be checked; output names are tested in test_dicom_cli.py and test_dicom_main_job.py
    code, out, err = cli("deid", str(src), str(dst), "--key", KEY, "--no-progress", "--keep-names")
    summary = re.search(r"deid: (\d+) done, (\d+) skipped.*, (\d+) failed", out)
    assert summary, out + err
    done, skipped, failed = map(int, summary.groups())
    assert done + skipped + failed == len(inputs)
    assert done >= 200
    failures = [line for line in err.splitlines() if line.startswith("failed: ")]
    assert len(failures) == failed <= 10
    assert all(BROKEN_REASONS.search(line) for line in failures), failures
    assert code == (1 if failed else 0)

    not_dicom = [p for p in inputs if not is_dicom(p)]
    assert not_dicom and skipped >= len(not_dicom)
    assert not [p for p in not_dicom if (dst / p.relative_to(src)).exists()]  # skipped files are never copied

    pairs = [(p, dst / p.relative_to(src)) for p in inputs if (dst / p.relative_to(src)).exists()]
    assert len(pairs) == done

    dcmdump = require_program("dcmdump", DEBIAN)

    def parses(path) -> bool:  # DCMTK reads it (dciodvfy cannot read deflated files, DCMTK can)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        return subprocess.run([dcmdump, "-q", "-M", str(path)], **quiet, timeout=120).returncode == 0

    def new_errors(pair):
        before, after = pair
        errors = sorted(dciodvfy(after) - dciodvfy(before))
        if parses(before) and not parses(after):
            errors.append("dcmdump cannot read the output")
        return before.relative_to(src), errors

    with ThreadPoolExecutor(max_workers=4) as pool:
        regressions = [(name, errors) for name, errors in pool.map(new_errors, pairs) if errors]
    assert not regressions, "\n".join(f"{name}: {errors}" for name, errors in regressions)
