"""A real kamailio (Debian package) as registrar + proxy on 127.0.0.1, for tests.

``start_kamailio(tmp_path)`` writes a minimal kamailio.cfg (registrar with in-memory usrloc,
record-routing stateful proxy, OPTIONS answered locally) listening on a free UDP port, runs
``kamailio -DD -E -f cfg`` in the foreground, waits until it answers an OPTIONS, and returns a
:class:`Kamailio` whose ``stop()`` (also run by the ``kamailio`` fixture) kills it.
Like every peer, a missing binary skips on a laptop and fails under CI (tests/peers.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.peers import require_binary

MODULES_DIR = "/usr/lib/x86_64-linux-gnu/kamailio/modules"

_CFG = """#!KAMAILIO
debug={debug}
log_stderror=yes
fork=yes
children=2
auto_aliases=no
listen=udp:127.0.0.1:{port}
alias="127.0.0.1:{port}"
rundir="{rundir}"
mpath="{modules}"

loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "cfgutils.so"
loadmodule "auth.so"

modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", 1)
modparam("registrar", "default_expires", {default_expires})
modparam("registrar", "max_expires", 3600)
modparam("rr", "enable_full_lr", 1)
modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 30000)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (is_method("OPTIONS") && uri == myself && $rU == $null) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            if (t_check_trans()) {{
                t_relay();
            }}
            exit;
        }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    t_check_trans();
    if (is_method("REGISTER")) {{
        if ({register_delay_us} > 0) {{
            usleep("{register_delay_us}");
        }}
{auth_block}
        if (!save("location")) {{
            sl_reply_error();
        }}
        exit;
    }}
    if (is_method("INVITE")) {{
        record_route();
    }}
    if (!lookup("location")) {{
        sl_send_reply("404", "Not Found");
        exit;
    }}
    t_relay();
}}
"""


_AUTH_BLOCK = """        if (!pv_www_authenticate("$td", "{password}", "0")) {{
            www_challenge("$td", "{qop}");
            exit;
        }}
"""


@dataclass
class Kamailio:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            # -DD keeps the main process in the foreground; it stops its children on SIGTERM.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _options(port: int) -> bytes:
    call_id = uuid.uuid4().hex
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{call_id[:16]};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.1>;tag={call_id[:8]}\r\n"
        f"To: <sip:127.0.0.1:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def start_kamailio(
    workdir: Path,
    *,
    default_expires: int = 60,
    register_delay: float = 0.0,
    password: str = "",
    qop: bool = False,
    timeout: float = 10.0,
    debug: int = 1,
) -> Kamailio:
    """Start kamailio; ``register_delay`` makes the registrar answer REGISTER that much later
    (a registrar with a slow database, used to widen the re-registration race window);
    ``password`` makes it demand digest authentication for REGISTER (every user, that password;
    ``qop`` adds ``qop=auth`` to the challenge)."""
    binary = require_binary("kamailio", "/usr/sbin/kamailio")
    workdir.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _attempt in range(3):  # the free port can be taken between probe and bind
        port = free_udp_port()
        cfg = workdir / f"kamailio-{port}.cfg"
        cfg.write_text(
            _CFG.format(
                port=port,
                rundir=workdir,
                modules=MODULES_DIR,
                default_expires=default_expires,
                debug=debug,
                register_delay_us=int(register_delay * 1_000_000),
                auth_block=_AUTH_BLOCK.format(password=password, qop=1 if qop else 0) if password else "",
            )
        )
        log_path = workdir / f"kamailio-{port}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [binary, "-DD", "-E", "-f", str(cfg), "-m", "32", "-M", "8"],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        kamailio = Kamailio("127.0.0.1", port, process, log_path)
        if _wait_ready(kamailio, timeout):
            return kamailio
        last_error = kamailio.log()[-2000:]
        kamailio.stop()
    pytest.fail(f"kamailio did not start:\n{last_error}", pytrace=False)


def _wait_ready(kamailio: Kamailio, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        probe.settimeout(0.2)
        while time.monotonic() < deadline:
            if kamailio.process.poll() is not None:
                return False
            probe.sendto(_options(kamailio.port), kamailio.address)
            try:
                data = probe.recv(4096)
            except TimeoutError:
                continue
            if data.startswith(b"SIP/2.0 200"):
                return True
    return False


@pytest.fixture(name="kamailio")
def kamailio_fixture(tmp_path: Path) -> Iterator[Kamailio]:
    """A running kamailio for one test; import ``kamailio_fixture`` to use it as ``kamailio``."""
    instance = start_kamailio(tmp_path / "kamailio")
    try:
        yield instance
    finally:
        instance.stop()
