"""A headless baresip as the agent's softphone, driven over ``ctrl_tcp`` (netstring JSON).

Per DESIGN.md §5: the ``aubridge`` player (ALSA/null would burn a core), no ``stdio`` module, an
``aufile`` source padded with silence, instances at least 2 ports apart (TLS binds port+1).
Each instance gets its own config directory and free ports; :meth:`Baresip.stop` kills it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telephony.audio import tone_linear16, write_wav_linear16
from tests.peers import require_binary
from tests.sipp import free_udp_port


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent_voice_wav(path: Path, seconds: float = 20.0) -> Path:
    """What the agent 'says': 1 s silence, then a 700 Hz tone with gaps (clearly non-silent)."""
    pcm = bytes(16000)
    while len(pcm) < seconds * 16000:
        pcm += tone_linear16((700.0,), 0.8, 0.3) + bytes(3200)
    write_wav_linear16(path, pcm)
    return path


@dataclass
class Baresip:
    workdir: Path
    user: str = "agent01"
    answermode: str = "auto"
    """``auto`` answers at once; ``manual`` rings until :meth:`accept` (or forever)."""
    registrar: str = ""
    """``host:port`` to REGISTER with (registered mode); empty = direct calls only."""
    sip_port: int = 0
    ctrl_port: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    _sock: socket.socket | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def contact(self) -> str:
        return f"sip:{self.user}@127.0.0.1:{self.sip_port}"

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        wav = agent_voice_wav(self.workdir / "agent_voice.wav")
        rtp_low = free_udp_port(even=True)
        config = f"""
poll_method		epoll
sip_listen		127.0.0.1:{self.sip_port}
sip_transports		udp
audio_player		aubridge,{self.user}-out
audio_alert		aubridge,{self.user}-alert
audio_source		aufile,{wav}
audio_srate		8000
audio_channels		1
rtp_ports		{rtp_low}-{rtp_low + 1}
rtcp_mux		no
jitter_buffer_delay	1-5
module_path		/usr/lib/baresip/modules
module			g711.so
module			aufile.so
module			aubridge.so
module_app		account.so
module_app		menu.so
module_app		ctrl_tcp.so
ctrl_tcp_listen		127.0.0.1:{self.ctrl_port}
"""
        (self.workdir / "config").write_text(config)
        if self.registrar:
            aor = f"<sip:{self.user}@{self.registrar};transport=udp>;regint=60"
        else:
            aor = f"<sip:{self.user}@127.0.0.1:{self.sip_port}>;regint=0"
        (self.workdir / "accounts").write_text(f"{aor};answermode={self.answermode};audio_codecs=PCMU,PCMA\n")
        (self.workdir / "contacts").write_text("")

    def start(self, timeout: float = 10.0) -> Baresip:
        """Start with the ports given, or with probed free ones: a probed port can be taken by a parallel
        process before baresip binds it ("Address already in use"), so then it is retried on new ports."""
        chosen = bool(self.sip_port or self.ctrl_port)
        for attempt in range(1 if chosen else 3):
            try:
                return self._start_once(timeout)
            except RuntimeError:
                if chosen or attempt == 2:
                    raise
                self.sip_port = self.ctrl_port = 0
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> Baresip:
        binary = require_binary("baresip")
        self.sip_port = self.sip_port or free_udp_port(even=True)
        self.ctrl_port = self.ctrl_port or _free_tcp_port()
        self._write_config()
        with open(self.workdir / "baresip.log", "wb") as log:
            self.proc = subprocess.Popen(
                [binary, "-f", str(self.workdir)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"baresip exited: {self.log()[-2000:]}")
            try:
                self._sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=0.5)
                break
            except OSError:
                time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError("baresip ctrl_tcp did not come up")
        self._sock.settimeout(None)
        threading.Thread(target=self._read_events, name=f"baresip-{self.user}", daemon=True).start()
        return self

    def _read_events(self) -> None:
        sock = self._sock
        assert sock is not None
        buffer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b":" in buffer:
                head, _, rest = buffer.partition(b":")
                if not head.isdigit():
                    buffer = b""
                    break
                size = int(head)
                if len(rest) < size + 1:
                    break
                payload, buffer = rest[:size], rest[size + 1 :]
                try:
                    message = json.loads(payload)
                except ValueError:
                    continue
                with self._cond:
                    self.events.append(message)
                    self._cond.notify_all()

    def command(self, command: str, params: str = "") -> None:
        assert self._sock is not None
        body = json.dumps({"command": command, "params": params, "token": str(time.monotonic_ns())}).encode()
        self._sock.sendall(str(len(body)).encode() + b":" + body + b",")

    def accept(self) -> None:
        self.command("accept")

    def hangup(self) -> None:
        self.command("hangup")

    def wait_event(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if event.get("type") == kind:
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [e.get("type") for e in self.events]
                    raise AssertionError(f"baresip {self.user}: no {kind} within {timeout}s; saw {seen}")
                self._cond.wait(left)

    def wait_registered(self, timeout: float = 10.0) -> None:
        """Registration usually completes before ctrl_tcp is connected, so read baresip's log too."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.has_event("REGISTER_OK") or "200 OK" in self.log():
                return
            time.sleep(0.1)
        raise AssertionError(f"baresip {self.user} did not register: {self.log()[-1500:]}")

    def has_event(self, kind: str) -> bool:
        with self._cond:
            return any(e.get("type") == kind for e in self.events)

    def log(self) -> str:
        path = self.workdir / "baresip.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self.command("quit")
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def __enter__(self) -> Baresip:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
