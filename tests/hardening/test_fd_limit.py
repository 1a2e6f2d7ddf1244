"""At the open-files limit the appliance backs off accepting (logging the trouble once per
10 s, not ten times a second) and serves again as soon as descriptors free up."""

from __future__ import annotations

import shutil
import socket
import sys
import time

import httpx
import pytest
from support.serve_process import ApplianceProcess

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit")]


def test_accept_backs_off_at_the_fd_limit_and_recovers(tmp_path):
    app = ApplianceProcess(tmp_path, ("serve", "--listen", "127.0.0.1:0"),
                           {"FF_MAX_CONNECTIONS": "1000", "FF_HEADER_TIMEOUT_MS": "60000"},
                           command=("prlimit", "--nofile=128:128", sys.executable, "-m",
                                    "appliance"))
    try:
        url = app.wait_listening()
        held = []
        for _ in range(200):  # more than the process can hold open
            held.append(socket.create_connection(("127.0.0.1", app.port)))
        time.sleep(1.0)  # the accept loop meets EMFILE over and over meanwhile
        assert app.proc.poll() is None
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, app.log[-2000:]
            time.sleep(0.05)
        complaints = [line for line in app.lines if "cannot accept connections" in line]
        assert 1 <= len(complaints) <= 2, complaints
        assert "ulimit -n" in complaints[0]
    finally:
        app.kill()
