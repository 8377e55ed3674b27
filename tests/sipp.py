"""Run Debian's sipp (sip-tester) scenarios against our endpoint on loopback.

* Free ports are probed per run, so parallel test runs don't collide.
* The caller's SDP advertises an :class:`RtpSink` port (``[$sinkport]``), so the RTP our endpoint
  sends lands in a Python socket where the test can check it is real, non-silent audio; sipp still
  sends its own RTP (the RFC 2833 digit pcaps that ship in ``/usr/share/sip-tester``) from ``-mp``.
* Every sipp process is killed in :meth:`SippRun.stop` (use it as a context manager).
"""

from __future__ import annotations

import audioop
import os
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers import require_binary

FIXTURES = Path(__file__).parent / "fixtures" / "sipp"
PCAP_DIR = Path("/usr/share/sip-tester")
DTMF_PCAPS = {**{str(d): f"dtmf_2833_{d}.pcap" for d in range(10)}, "#": "dtmf_2833_pound.pcap",
              "*": "dtmf_2833_star.pcap"}
DTMF_MARKER = "<!--DTMF-->"
HOLD_MARKER = "<!--HOLD-->"


def free_udp_port(host: str = "127.0.0.1", even: bool = False) -> int:
    """A UDP port that is free now (and, with ``even``, whose neighbour +2 is free too, for RTP)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if even and (port % 2 or port > 65000):
            continue
        if even:
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s2:
                    s2.bind((host, port + 2))
            except OSError:
                continue
        return port
    raise RuntimeError("no free UDP port on loopback")


@dataclass
class RtpSink:
    """Receives the endpoint's RTP for one or many calls and keeps per-stream statistics."""

    host: str = "127.0.0.1"
    port: int = 0
    packets: int = 0
    loud_frames: int = 0
    payload_types: set[int] = field(default_factory=set)
    intervals_ms: list[float] = field(default_factory=list)
    keep_intervals: int = 200_000
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _running: bool = False
    _last: dict[int, float] = field(default_factory=dict)

    def start(self) -> RtpSink:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self._sock.bind((self.host, self.port))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._running = True
        self._thread = threading.Thread(target=self._run, name="rtp-sink", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._sock is not None
        while self._running:
            try:
                data = self._sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) >= 12:
                self.on_packet(data, time.monotonic())

    def on_packet(self, data: bytes, now: float) -> None:
        """One RTP packet (header included); subclasses keep what their test needs."""
        pt = data[1] & 0x7F
        ssrc = struct.unpack("!I", data[8:12])[0]
        self.packets += 1
        self.payload_types.add(pt)
        last = self._last.get(ssrc)
        if last is not None and len(self.intervals_ms) < self.keep_intervals:
            self.intervals_ms.append((now - last) * 1000)
        self._last[ssrc] = now
        payload = data[12:]
        if pt in (0, 8) and payload:
            lin = audioop.ulaw2lin(payload, 2) if pt == 0 else audioop.alaw2lin(payload, 2)
            if audioop.rms(lin, 2) > 300:
                self.loud_frames += 1

    @property
    def streams(self) -> int:
        return len(self._last)

    def stop(self) -> None:
        self._running = False
        if self._sock is not None:
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)


def dtmf_actions(digits: str, first_pause_ms: int = 800, gap_ms: int = 400) -> str:
    """sipp XML that plays the shipped RFC 2833 pcap of each digit, with pauses between them."""
    parts = [f'<pause milliseconds="{first_pause_ms}"/>']
    for d in digits:
        if d == ",":
            parts.append('<pause milliseconds="1500"/>')
            continue
        pcap = PCAP_DIR / DTMF_PCAPS[d]
        parts.append(f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
        parts.append(f'<pause milliseconds="{gap_ms}"/>')
    return "\n  ".join(parts)


def render_scenario(name: str, out_dir: Path, digits: str = "", hold_ms: int = 1000, **pause: int) -> Path:
    """Copy a fixture scenario, replacing the ``<!--DTMF-->`` / ``<!--HOLD-->`` markers."""
    text = (FIXTURES / name).read_text()
    text = text.replace(DTMF_MARKER, dtmf_actions(digits, **pause) if digits else "")
    text = text.replace(HOLD_MARKER, f'<pause milliseconds="{hold_ms}"/>')
    out = out_dir / name
    out.write_text(text)
    return out


@dataclass
class SippRun:
    scenario: Path
    target: str
    """``host:port`` of the endpoint (or the kamailio proxy)."""
    workdir: Path
    variables: dict[str, str] = field(default_factory=dict)
    service: str = "1000"
    calls: int = 1
    rate: float = 10.0
    limit: int | None = None
    timeout_s: float = 60.0
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    local_port: int = 0
    media_port: int = 0

    def command(self) -> list[str]:
        sipp = require_binary("sipp", "/usr/bin/sipp")
        self.local_port = self.local_port or free_udp_port()
        self.media_port = self.media_port or free_udp_port(even=True)
        cmd = [
            sipp, self.target, "-sf", str(self.scenario), "-s", self.service,
            "-i", "127.0.0.1", "-p", str(self.local_port), "-mi", "127.0.0.1", "-mp", str(self.media_port),
            "-m", str(self.calls), "-r", str(self.rate), "-l", str(self.limit or self.calls),
            "-timeout", f"{int(self.timeout_s)}s", "-timeout_error",
            "-trace_err", "-error_file", str(self.workdir / "sipp_errors.log"),
            "-trace_stat", "-stf", str(self.workdir / "sipp_stats.csv"),
            "-max_recv_loops", "1000", "-recv_timeout", str(int(self.timeout_s * 1000)),
        ]
        for key, value in self.variables.items():
            cmd += ["-set", key, value]
        return cmd + self.extra

    def start(self) -> SippRun:
        with open(self.workdir / "sipp_stdout.log", "wb") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env={**os.environ, "TERM": "dumb"},
            )
        return self

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout or self.timeout_s + 10)
        except subprocess.TimeoutExpired:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def errors(self) -> str:
        path = self.workdir / "sipp_errors.log"
        out = path.read_text(errors="replace")[-3000:] if path.exists() else ""
        stdout = self.workdir / "sipp_stdout.log"
        if stdout.exists():
            out += "\n--- stdout ---\n" + stdout.read_text(errors="replace")[-2000:]
        return out

    def __enter__(self) -> SippRun:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
