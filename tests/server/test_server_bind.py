"""Refusing a public bind without authentication, on a real start (not ``--dry-run``): the command exits with
its one-line reason before anything listens."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from server_testlib import REPO, free_port


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_real_start_on_a_public_address_without_auth_is_refused(tmp_path, host):
    port = free_port()
    r = subprocess.run([sys.executable, "-m", "monai_anon_app.cli", "serve", "--host", host, "--port", str(port),
                        "--workdir", str(tmp_path / "w"), "--studies", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"refusing to listen on {host} without authentication" in lines[0], r.stderr
    assert "monai-anon serve: http" not in r.stdout  # it never got as far as announcing an address
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.settimeout(10)
        s.connect(("127.0.0.1", port))  # and nothing was started on the port
