"""A missing real peer skips locally and fails under CI (``tests/peers.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PROBE = '''
from pathlib import Path
from peers import require_module, require_path, require_program

def test_module():
    require_module("no_such_module_for_monai_anon", "nothing")

def test_program():
    require_program("no-such-program-for-monai-anon", "nothing")

def test_path():
    require_path(Path("/no/such/path/for/monai-anon"), "a folder", "nothing")

def test_present():
    assert require_module("json", "nothing").dumps(1) == "1"
'''


@pytest.mark.parametrize("ci", ["true", ""])
def test_a_missing_peer_is_a_skip_locally_and_a_failure_under_ci(tmp_path, ci):
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {**os.environ, "CI": ci, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs", str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    if ci:
        assert r.returncode == 1, r.stdout
        assert "3 failed, 1 passed" in r.stdout
        for what in ("the Python module no_such_module_for_monai_anon", "the program no-such-program-for-monai-anon",
                     "a folder (/no/such/path/for/monai-anon)"):
            assert f"CI=true and a real peer is missing: {what}" in r.stdout, r.stdout
    else:
        assert r.returncode == 0, r.stdout
        assert "1 passed, 3 skipped" in r.stdout and "no-such-program-for-monai-anon is missing" in r.stdout
