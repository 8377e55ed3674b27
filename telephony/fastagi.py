"""FastAGI server: Asterisk connects here from ``AGI(agi://host:port/ivr)`` and we run the IVR.

Wire protocol (Asterisk documentation, "AGI" / "FastAGI"):

* Asterisk opens a TCP connection and sends the environment: lines ``agi_<name>: <value>`` ended by
  one empty line (``agi_network: yes``, ``agi_network_script``, ``agi_request``, ``agi_channel``,
  ``agi_uniqueid``, ``agi_callerid``, ``agi_extension``, ``agi_dnid``, ``agi_arg_1`` …).
* We send one command per line; Asterisk answers each with one line ``200 result=<n> [(<data>)]
  [endpos=<n>]``, or ``510 Invalid or unknown command``, ``511 Command Not Permitted on a dead
  channel or intercept routine``, or a multi-line ``520-Invalid command syntax.  Proper usage
  follows:`` … ``520 End of proper usage.``.
* ``STREAM FILE <file> "<escape digits>"``: ``result=0`` played to the end, ``result=<ASCII code>``
  interrupted by that digit, ``result=-1`` failure or hang-up.
* ``GET DATA <file> <timeout ms> <max digits>``: ``result=<digits>`` (``#`` ends input and is not
  included), with ``(timeout)`` when the timeout ended input; ``result=-1`` on hang-up.
* ``SET VARIABLE <name> "<value>"`` → ``200 result=1``; ``HANGUP`` → ``200 result=1``.
* When the channel hangs up and ``AGISIGHUP`` is not ``no``, Asterisk sends the line ``HANGUP``
  on the FastAGI socket; later commands get ``511``.

This module knows the protocol only; :mod:`telephony.asterisk` decides what to run per call.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_ENV_LINES = 200
MAX_LINE = 8192
_RESULT = re.compile(r"^result=(?P<result>\S*)(?:\s+\((?P<data>[^)]*)\))?(?P<rest>.*)$")


class AgiError(Exception):
    """The peer broke the protocol or refused a command; carries the command and the answer."""

    def __init__(self, command: str, answer: str) -> None:
        super().__init__(f"AGI {command.split(' ', 1)[0]} failed: {answer}")
        self.command = command
        self.answer = answer


class AgiHangup(Exception):
    """The channel hung up (``HANGUP`` line, ``511``, ``result=-1`` or the socket closed)."""


@dataclass(frozen=True)
class AgiResult:
    code: int
    result: str
    data: str = ""
    extras: str = ""

    @property
    def timed_out(self) -> bool:
        return self.data == "timeout"


def parse_result(line: str) -> AgiResult:
    """Parse ``200 result=...`` (and friends); a non-200 line raises :class:`AgiError`."""
    code_text, _, rest = line.partition(" ")
    if not code_text.isdigit():
        raise AgiError("?", line)
    code = int(code_text)
    if code != 200:
        return AgiResult(code, "", rest)
    match = _RESULT.match(rest)
    if match is None:
        raise AgiError("?", line)
    return AgiResult(200, match.group("result"), match.group("data") or "", match.group("rest").strip())


def quote(value: str) -> str:
    """Quote an argument for an AGI command line (no newlines may reach the wire)."""
    cleaned = value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")
    return f'"{cleaned}"'


class AgiSession:
    """One FastAGI connection: the channel's environment and a command/answer channel."""

    def __init__(self, sock: socket.socket, *, command_timeout: float = 120.0) -> None:
        self._sock = sock
        self._file = sock.makefile("rb")
        self._command_timeout = command_timeout
        self.env: dict[str, str] = {}
        self.hung_up = False

    def read_env(self) -> dict[str, str]:
        for _ in range(MAX_ENV_LINES):
            line = self._readline()
            if line == "":
                return self.env
            key, sep, value = line.partition(":")
            if not sep or not key.startswith("agi_"):
                raise AgiError("environment", "malformed line")
            self.env[key.strip()] = value.strip()
        raise AgiError("environment", f"more than {MAX_ENV_LINES} lines")

    def _readline(self) -> str:
        raw = self._file.readline(MAX_LINE + 1)
        if not raw:
            self.hung_up = True
            raise AgiHangup("socket closed")
        if len(raw) > MAX_LINE:
            raise AgiError("read", "line too long")
        return raw.decode("utf-8", errors="replace").rstrip("\r\n")

    def command(self, text: str) -> AgiResult:
        if self.hung_up:
            raise AgiHangup("channel already hung up")
        self._sock.settimeout(self._command_timeout)
        try:
            self._sock.sendall((text + "\n").encode())
            line = self._readline()
            while line == "HANGUP":
                # The hang-up notice may arrive before the answer to the command in flight.
                self.hung_up = True
                line = self._readline()
        except (TimeoutError, OSError) as exc:
            self.hung_up = True
            raise AgiHangup(type(exc).__name__) from exc
        if line.startswith("520-"):
            usage = [line]
            while not line.startswith("520 "):
                line = self._readline()
                usage.append(line)
            raise AgiError(text, "invalid command syntax")
        result = parse_result(line)
        if result.code == 511:
            self.hung_up = True
            raise AgiHangup("dead channel")
        if result.code != 200:
            raise AgiError(text, line)
        return result

    # -- the commands we use ---------------------------------------------------------------------
    def stream_file(self, name: str, escape_digits: str = "") -> str:
        """Play ``name``; return the digit that interrupted it, or ``""``."""
        result = self.command(f"STREAM FILE {name} {quote(escape_digits)}")
        if result.result == "-1":
            self.hung_up = True
            raise AgiHangup("stream file failed")
        code = int(result.result or "0")
        return chr(code) if code > 0 else ""

    def get_data(self, name: str, timeout_ms: int, max_digits: int) -> tuple[str, bool]:
        """Play ``name`` and collect up to ``max_digits``; returns (digits, timed_out)."""
        result = self.command(f"GET DATA {name} {timeout_ms} {max_digits}")
        if result.result == "-1":
            self.hung_up = True
            raise AgiHangup("get data failed")
        return result.result, result.timed_out

    def set_variable(self, name: str, value: str) -> None:
        self.command(f"SET VARIABLE {name} {quote(value)}")

    def hangup(self) -> None:
        with contextlib.suppress(AgiHangup):
            self.command("HANGUP")
        self.hung_up = True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self._sock.close()


SessionHandler = Callable[[AgiSession], None]


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        session = AgiSession(self.request, command_timeout=self.server.command_timeout)
        try:
            session.read_env()
            self.server.on_session(session)
        except AgiHangup:
            pass
        except AgiError as exc:
            log.warning("FastAGI session from %s ended: %s", self.client_address[0], exc)
        except Exception:
            log.exception("FastAGI session handler failed")
        finally:
            session.close()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], on_session: SessionHandler, command_timeout: float) -> None:
        self.on_session = on_session
        self.command_timeout = command_timeout
        super().__init__(address, _Handler)


class FastAgiServer:
    """Threaded FastAGI listener; ``port=0`` picks a free port (see ``address`` after ``start``)."""

    def __init__(self, host: str, port: int, on_session: SessionHandler, *, command_timeout: float = 120.0):
        self._server = _Server((host, port), on_session, command_timeout)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="fastagi", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()  # waits for serve_forever, so only when it runs
            self._thread.join(2)
            self._thread = None
        self._server.server_close()
