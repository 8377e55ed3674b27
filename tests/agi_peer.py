"""Asterisk's side of one FastAGI connection, as the Asterisk AGI documentation describes it.

No Asterisk can run here, so this plays the PBX: it connects to our FastAGI server, sends the
``agi_*`` environment ended by an empty line, then answers each command the way Asterisk does:

* ``STREAM FILE f "digits"`` → ``200 result=0 endpos=<n>``, or ``200 result=<ASCII> endpos=<n>`` when
  the caller interrupts with an escape digit;
* ``GET DATA f <ms> <max>`` → ``200 result=<digits>`` (``#`` ends input and is not returned), or
  ``200 result= (timeout)`` / ``200 result=<partial> (timeout)`` when the time runs out;
* ``SET VARIABLE n "v"`` → ``200 result=1``; ``HANGUP`` → ``200 result=1`` then the connection closes;
* an unknown command → ``510 Invalid or unknown command``;
* when the caller hangs up: the line ``HANGUP`` (``AGISIGHUP=yes``), ``result=-1`` for the command
  in progress, ``511 Command Not Permitted on a dead channel or intercept routine`` afterwards.

The caller is a script: a list of what the caller does at each ``GET DATA`` (digits typed, ``None``
for silence, ``"hangup"``), plus optional barge-in digits for ``STREAM FILE``.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


def agi_environment(*, uniqueid: str, caller: str, dialled: str = "1000",
                    channel: str = "PJSIP/trunk-00000001", script: str = "ivr") -> dict[str, str]:
    return {
        "agi_network": "yes",
        "agi_network_script": script,
        "agi_request": f"agi://127.0.0.1/{script}",
        "agi_channel": channel,
        "agi_language": "en",
        "agi_type": "PJSIP",
        "agi_uniqueid": uniqueid,
        "agi_version": "20.5.0",
        "agi_callerid": caller or "unknown",
        "agi_calleridname": "unknown",
        "agi_callingpres": "0",
        "agi_dnid": dialled,
        "agi_rdnis": "unknown",
        "agi_context": "callcentre-in",
        "agi_extension": "s",
        "agi_priority": "3",
        "agi_enhanced": "0.0",
        "agi_accountcode": "",
        "agi_threadid": "140000000000000",
        "agi_arg_1": dialled,
    }


@dataclass
class AgiCaller:
    port: int
    env: dict[str, str]
    script: list[str | None] | queue.Queue[str | None]
    """What the caller does at each GET DATA: digits, ``None`` (silence) or ``"hangup"``; a queue
    makes the caller interactive (the test feeds each answer when it wants)."""
    barge: dict[int, str] = field(default_factory=dict)
    """STREAM FILE number (0-based) → digit the caller presses during it."""
    commands: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    played: list[str] = field(default_factory=list)
    hung_up_by_platform: bool = False
    error: BaseException | None = None
    on_get_data: Callable[[], None] | None = None
    """Called when a GET DATA arrives, before answering (lets a test look at the PBX side then)."""

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="agi-caller", daemon=True)
        self._streams = 0
        self._dead = False
        self.turns = 0
        """How many times the caller has been asked for input (interactive use waits on this)."""

    def start(self) -> AgiCaller:
        self._thread.start()
        return self

    def wait(self, timeout: float = 10.0) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                sock.sendall(("".join(f"{k}: {v}\n" for k, v in self.env.items()) + "\n").encode())
                reader = sock.makefile("rb")
                while True:
                    raw = reader.readline()
                    if not raw:
                        return
                    line = raw.decode().rstrip("\n")
                    self.commands.append(line)
                    reply = self._answer(line)
                    if reply is None:
                        return
                    with contextlib.suppress(OSError):
                        sock.sendall(reply.encode())
                    if self.hung_up_by_platform:
                        return
        except BaseException as exc:  # reported to the test
            self.error = exc

    def _answer(self, line: str) -> str | None:
        if self._dead:
            return "511 Command Not Permitted on a dead channel or intercept routine\n"
        verb = line.split(" ", 2)
        head = " ".join(verb[:2]).upper()
        if head == "STREAM FILE":
            name = verb[2].split(" ", 1)[0]
            self.played.append(name)
            digit = self.barge.get(self._streams)
            self._streams += 1
            if digit:
                return f"200 result={ord(digit)} endpos=4000\n"
            return "200 result=0 endpos=16000\n"
        if head == "GET DATA":
            name = verb[2].split(" ", 1)[0]
            self.played.append(name)
            if self.on_get_data is not None:
                self.on_get_data()
            self.turns += 1
            if isinstance(self.script, queue.Queue):
                try:
                    action = self.script.get(timeout=10)
                except queue.Empty:
                    action = "hangup"
            else:
                action = self.script.pop(0) if self.script else "hangup"
            if action == "hangup":
                self._dead = True
                return "HANGUP\n200 result=-1\n"
            if action is None:
                return "200 result= (timeout)\n"
            return f"200 result={action.rstrip('#')}\n"
        if head == "SET VARIABLE":
            name, _, value = verb[2].partition(" ")
            self.variables[name] = value.strip('"')
            return "200 result=1\n"
        if line.upper() == "HANGUP":
            self.hung_up_by_platform = True
            return "200 result=1\n"
        return "510 Invalid or unknown command\n"
