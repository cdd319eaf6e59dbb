"""`central init` and `central serve`: a real uvicorn process on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_health(tmp_path: Path) -> None:
    data = tmp_path / "central"
    init = subprocess.run([sys.executable, "-m", "sync.central", "init", "--data", str(data)],
                          capture_output=True, text=True, timeout=30)
    assert init.returncode == 0, init.stderr
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "sync.central", "serve", "--data",
                               str(data), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                reply = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, "central serve exited"
                assert time.monotonic() < deadline, "central serve did not answer in time"
                time.sleep(0.1)
        assert reply.status_code == 200
        assert reply.json()["status"] == "ok"
    finally:
        server.terminate()
        server.wait(10)


def test_serve_refuses_a_directory_that_was_never_initialised(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "sync.central", "serve", "--data",
                           str(tmp_path / "nothing")], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    assert "run `central init" in done.stderr
