"""``callcentre serve`` runs the SIP endpoint; Ctrl-C (SIGINT) ends live calls with a BYE and exits."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from callcentre.settings import Settings
from tests.integration.sip_fixtures import CALLER_KNOWN, seed_customers, workdir
from tests.sipp import RtpSink, SippRun, free_udp_port, render_scenario

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _options_ok(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.3)
        me = s.getsockname()[1]
        s.sendto((f"OPTIONS sip:1000@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKo1\r\n"
                  f"From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: probe-{me}\r\n"
                  "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(), ("127.0.0.1", port))
        try:
            return s.recv(4096).startswith(b"SIP/2.0 200")
        except OSError:
            return False


def test_serve_answers_calls_and_ctrl_c_ends_them_cleanly(settings: Settings, tmp_path: Path) -> None:
    seed_customers(settings)
    sip_port, http_port = free_udp_port(), _free_tcp_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "callcentre.cli", "--database", settings.database.url, "serve",
             "--sip", f"127.0.0.1:{sip_port}", "--http", f"127.0.0.1:{http_port}"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        )
    sink = RtpSink().start()
    run: SippRun | None = None
    try:
        deadline = time.monotonic() + 20
        while not _options_ok(sip_port):
            assert serve.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "serve did not answer OPTIONS: " + log_path.read_text()
            time.sleep(0.2)
        work = workdir(tmp_path, "caller")
        scenario = render_scenario("agent_call.xml", work, digits="2", first_pause_ms=800)
        run = SippRun(scenario, f"127.0.0.1:{sip_port}", work,
                      variables={"sinkport": str(sink.port), "caller": CALLER_KNOWN}, timeout_s=30).start()
        time.sleep(4.0)  # through the IVR, now queued and waiting (hold music)
        assert sink.loud_frames > 20
        serve.send_signal(signal.SIGINT)
        assert run.wait(15) == 0, run.errors()  # the caller got our BYE and answered it
        assert serve.wait(15) == 0, log_path.read_text()
        assert "ending calls and stopping" in log_path.read_text()
    finally:
        if run is not None:
            run.stop()
        sink.stop()
        if serve.poll() is None:
            serve.kill()
            serve.wait(5)
    from click.testing import CliRunner

    from callcentre.cli import main

    listed = CliRunner().invoke(main, ["--database", settings.database.url, "calls", "list", "--json"])
    calls = json.loads(listed.output)
    assert len(calls) == 1 and calls[0]["reason"] == "technical"
