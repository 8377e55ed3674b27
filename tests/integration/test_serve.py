"""``callcentre serve`` as a real process: the console answers, Ctrl-C stops it cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, process: subprocess.Popen[str], seconds: float = 30) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited early: {process.communicate()[0]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {seconds} s")


@pytest.mark.parametrize("backend", ["memory", "sip"])
def test_serve_starts_console_and_stops_on_ctrl_c(tmp_path: Path, backend: str) -> None:
    http_port = free_port()
    args = [sys.executable, "-m", "callcentre.cli", "--database", f"sqlite:///{tmp_path / 'cc.db'}", "serve",
            "--backend", backend, "--http", f"127.0.0.1:{http_port}"]
    if backend == "sip":
        args += ["--sip", f"127.0.0.1:{free_port()}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCENTRE_")}
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               cwd=tmp_path)
    try:
        status = wait_for_http(f"http://127.0.0.1:{http_port}/login", process)
        assert status == 200
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert f"{backend} backend up" in output
    assert "ending calls and stopping" in output
    if backend == "sip":
        assert "SIP on 127.0.0.1:" in output
