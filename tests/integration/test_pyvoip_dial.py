"""Outgoing calls from the hardened phone (``dial``): answered, refused, cancelled, through kamailio.

Stock 1.6.8's ``VoIPPhone.call`` reads the socket itself under the receive lock while waiting for
the answer (the same defect as registration) and always sends to the registrar; ``dial`` sends the
INVITE and lets the single receive thread deliver the responses. The far ends are sipp's built-in
UAS (a real third-party callee) and a second hardened phone.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from telephony.pyvoip_patches import CallState, uri_user
from tests.integration.pyvoip_support import hardened_phone
from tests.kamailio import Kamailio, free_udp_port, kamailio_fixture  # noqa: F401  (the kamailio fixture)
from tests.peers import require_binary

pytestmark = pytest.mark.peer
TONE = bytes([0x80 + (40 if (n // 10) % 2 else -40) for n in range(160)])


@contextmanager
def sipp_uas() -> Iterator[int]:
    """sipp's built-in UAS on a free port: answers every INVITE 180/200, then waits for BYE."""
    port = free_udp_port()
    proc = subprocess.Popen(
        [require_binary("sipp"), "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-mp", str(free_udp_port() & ~1),
         "-nostdin", "-m", "1", "-timeout", "15"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        time.sleep(0.3)
        yield port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()


def test_dial_sipp_uas_answered_and_hung_up() -> None:
    with sipp_uas() as port, hardened_phone(None) as phone:
        call = phone.dial(f"sip:service@127.0.0.1:{port}")
        assert call.state in (CallState.DIALING, CallState.ANSWERED)  # sipp answers within microseconds
        assert call.answered_event.wait(3)
        assert call.state == CallState.ANSWERED and call.final_status == 200
        call.hangup()
        assert call.end_reason == "local-bye" and phone.calls == {}


@contextmanager
def two_phones(callee_handler: Any, **callee_kwargs: Any) -> Iterator[tuple[Any, Any]]:
    with hardened_phone(None) as caller, hardened_phone(callee_handler, **callee_kwargs) as callee:
        yield caller, callee


def test_dial_another_phone_audio_both_ways_and_remote_bye() -> None:
    heard: list[bytes] = []
    callee_calls: list[Any] = []
    done = threading.Event()

    def callee_handler(call: Any) -> None:
        callee_calls.append(call)
        call.answer()
        call.write_audio(TONE * 25)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not call.ended.is_set():
            frame = call.read_audio(160, blocking=False)
            if frame != b"\x80" * 160:
                heard.append(frame)
            time.sleep(0.02)
        done.set()

    with two_phones(callee_handler) as (caller, callee):
        call = caller.dial(f"sip:1000@127.0.0.1:{callee.sip_port}")
        assert call.answered_event.wait(3)
        call.write_audio(TONE * 25)
        got: list[bytes] = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            frame = call.read_audio(160, blocking=False)
            if frame != b"\x80" * 160:
                got.append(frame)
            time.sleep(0.02)
        call.hangup()
        assert done.wait(4)
    assert len(got) >= 10 and len(heard) >= 10  # non-silent audio both ways
    assert callee_calls[0].end_reason == "remote-bye" and callee_calls[0].dialled == "1000"


def test_dial_refused_with_404_is_acked_and_reported() -> None:
    with two_phones(lambda call: None, screen_call=lambda req: 404 if uri_user(req.uri) != "1000" else None) as (
        caller,
        callee,
    ):
        call = caller.dial(f"sip:9999@127.0.0.1:{callee.sip_port}")
        assert call.ended.wait(3)
        assert call.end_reason == "failed:404" and call.final_status == 404
        time.sleep(0.6)
        assert callee.sip.stats["datagrams"] == 2  # INVITE + ACK: no retransmission, the 404 was ACKed


def test_dial_cancelled_before_answer() -> None:
    ringing = threading.Event()
    callee_calls: list[Any] = []

    def never_answers(call: Any) -> None:
        callee_calls.append(call)
        ringing.set()
        call.ended.wait(5)

    with two_phones(never_answers) as (caller, callee):
        call = caller.dial(f"sip:1000@127.0.0.1:{callee.sip_port}")
        assert ringing.wait(3)
        time.sleep(0.1)
        call.cancel()  # the agent's ring time ran out
        assert call.ended.wait(3)
        assert call.end_reason == "cancelled-local"
        assert callee_calls[0].ended.wait(2) and callee_calls[0].end_reason == "cancelled"
        assert caller.calls == {} and callee.calls == {}


def test_dial_through_kamailio_by_number(kamailio: Kamailio) -> None:
    answered = threading.Event()

    def agent(call: Any) -> None:
        call.answer()
        answered.set()
        call.ended.wait(5)

    with (
        hardened_phone(agent, kamailio=kamailio, username="agent01") as agent_phone,
        hardened_phone(None, kamailio=kamailio, username="platform") as platform,
    ):
        call = platform.dial("agent01")
        assert call.answered_event.wait(3) and answered.is_set()
        assert call.dialog.route_set  # kamailio record-routed: in-dialog requests go through it
        call.hangup()
        deadline = time.monotonic() + 2
        while agent_phone.calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent_phone.calls == {}
