"""FastAGI conversations driving the real IVR (engine + IvrService + demo database).

No Asterisk can run here: ``tests/agi_peer.py`` plays Asterisk's side of the FastAGI protocol as
the Asterisk AGI documentation describes it (environment block, ``200 result=`` answers, ``HANGUP``
notice, ``510``/``511``). Each test names the documented behaviour it reproduces.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from callcentre.bootstrap import Platform, build_platform
from callcentre.db.models import Call, CallContextItem
from callcentre.demo_data import demo_customer
from callcentre.domain.events import CallHungUp
from callcentre.settings import Settings
from telephony.asterisk import AsteriskBackend
from telephony.fastagi import AgiError, parse_result
from tests.agi_peer import AgiCaller, agi_environment


@pytest.fixture
def platform(demo_settings: Settings) -> Iterator[Platform]:
    backend = AsteriskBackend(demo_settings.asterisk, agi_port=0, enable_ami=False, agi_idle_seconds=5)
    plat = build_platform(demo_settings, backend)
    plat.start()
    yield plat
    plat.stop()


def agi_port(platform: Platform) -> int:
    assert isinstance(platform.backend, AsteriskBackend)
    return platform.backend.agi.address[1]


def saved_call(platform: Platform, uniqueid: str) -> tuple[Call, dict[str, str]]:
    deadline = time.monotonic() + 5
    while True:
        with platform.session_factory() as session:
            call = session.scalar(select(Call).where(Call.backend_ref == uniqueid))
            if call is not None and (call.state != "ivr" or time.monotonic() > deadline):
                items = {i.key: i.value for i in session.scalars(
                    select(CallContextItem).where(CallContextItem.call_id == call.id))}
                return call, items
        if time.monotonic() > deadline:
            raise AssertionError("call not saved")
        time.sleep(0.02)


def test_known_caller_reaches_queue(platform: Platform) -> None:
    """Documented AGI exchange: environment block; ``STREAM FILE`` → ``200 result=0 endpos=…``;
    ``GET DATA`` → ``200 result=2``; ``SET VARIABLE`` → ``200 result=1``; the AGI ends and the dialplan
    continues (to music on hold, by ``CALLCENTRE_NEXT=queue``)."""
    phone = demo_customer(1)["phone"]
    caller = AgiCaller(agi_port(platform), agi_environment(uniqueid="1700000100.1", caller=phone), ["2"]).start()
    assert caller.wait() and caller.error is None
    assert caller.played == ["callcentre/welcome", "callcentre/main_menu", "callcentre/connecting"]
    assert caller.variables["CALLCENTRE_NEXT"] == "queue"
    assert caller.variables["CALLCENTRE_QUEUE"] == "technical"
    assert caller.commands[0].startswith("SET VARIABLE CALLCENTRE_CALL_ID ")
    assert caller.commands[2].startswith("GET DATA callcentre/main_menu 6000 1")
    call, items = saved_call(platform, "1700000100.1")
    assert call.id == caller.variables["CALLCENTRE_CALL_ID"]
    assert call.state == "queued" and call.backend == "asterisk" and call.reason == "technical"
    assert items["identified_by"] == "caller_id" and call.dialled_number == "1000"


def test_unknown_caller_with_account_and_pin(platform: Platform) -> None:
    """Documented ``GET DATA <file> <ms> <max>``: ``#`` ends input and is not returned; the PIN prompt
    asks for exactly 4 digits."""
    spec = demo_customer(2)
    env = agi_environment(uniqueid="1700000101.1", caller="+19995550000")
    caller = AgiCaller(agi_port(platform), env, [spec["account_number"] + "#", spec["pin"], "1"]).start()
    assert caller.wait() and caller.error is None
    assert [c.split(" ")[2] for c in caller.commands if c.startswith("GET DATA")] == [
        "callcentre/enter_account", "callcentre/enter_pin", "callcentre/main_menu"]
    assert any(c.startswith("GET DATA callcentre/enter_pin 6000 4") for c in caller.commands)
    call, items = saved_call(platform, "1700000101.1")
    assert call.state == "queued" and call.reason == "billing"
    assert items["account_number"] == spec["account_number"] and items["identified_by"] == "account_pin"
    assert spec["pin"] not in items.values()


def test_silence_and_bad_input_fall_back_to_general_queue(platform: Platform) -> None:
    """Documented ``GET DATA`` timeout answer ``200 result= (timeout)`` becomes ``InputTimedOut``;
    after the flow's attempts the caller lands in the fallback queue, not in a loop."""
    phone = demo_customer(3)["phone"]
    env = agi_environment(uniqueid="1700000102.1", caller=phone)
    caller = AgiCaller(agi_port(platform), env, [None, "7", None]).start()
    assert caller.wait() and caller.error is None
    assert "callcentre/no_input" in caller.played and "callcentre/invalid" in caller.played
    assert caller.variables["CALLCENTRE_NEXT"] == "queue" and caller.variables["CALLCENTRE_QUEUE"] == "general"
    call, _ = saved_call(platform, "1700000102.1")
    assert call.state == "queued"


def test_caller_hangs_up_in_the_ivr(platform: Platform) -> None:
    """Documented hang-up: Asterisk sends the line ``HANGUP`` (``AGISIGHUP=yes``) and the command in
    progress answers ``result=-1``. The call is saved as abandoned at the step where it happened."""
    hung: list[CallHungUp] = []
    platform.bus.subscribe(CallHungUp, hung.append)
    env = agi_environment(uniqueid="1700000103.1", caller="+19995550001")
    caller = AgiCaller(agi_port(platform), env, ["hangup"]).start()
    assert caller.wait() and caller.error is None
    call, _ = saved_call(platform, "1700000103.1")
    assert call.state == "ended" and call.outcome == "abandoned" and call.ended_at_step == "identify"
    assert [(e.call_id, e.by) for e in hung] == [(call.id, "caller")]


def test_barge_in_during_a_prompt(platform: Platform) -> None:
    """Documented ``STREAM FILE f "0123456789*#"``: a key pressed during playback stops it and answers
    ``result=<ASCII code of the digit>``; that key is the caller's menu choice."""
    phone = demo_customer(4)["phone"]
    env = agi_environment(uniqueid="1700000104.1", caller=phone)
    caller = AgiCaller(agi_port(platform), env, [], barge={0: "1"}).start()
    assert caller.wait() and caller.error is None
    assert caller.played[:1] == ["callcentre/welcome"] and "callcentre/main_menu" not in caller.played
    assert caller.variables["CALLCENTRE_QUEUE"] == "billing"


def test_malformed_environment_is_refused_and_server_keeps_serving(platform: Platform) -> None:
    """A connection that is not AGI (no ``agi_`` keys) is closed; the next real call still works."""
    with socket.create_connection(("127.0.0.1", agi_port(platform)), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100) == b""
    phone = demo_customer(5)["phone"]
    caller = AgiCaller(agi_port(platform), agi_environment(uniqueid="1700000105.1", caller=phone), ["3"]).start()
    assert caller.wait() and caller.error is None
    assert caller.variables["CALLCENTRE_QUEUE"] == "sales"


def test_result_line_parsing() -> None:
    """Documented answer forms: ``200 result=<n> [(<data>)] [endpos=<n>]``, ``510``, ``511``."""
    assert parse_result("200 result=1234 (timeout)").result == "1234"
    assert parse_result("200 result=1234 (timeout)").timed_out
    assert parse_result("200 result= (timeout)").result == ""
    stream = parse_result("200 result=49 endpos=8000")
    assert stream.result == "49" and stream.extras == "endpos=8000"
    assert parse_result("510 Invalid or unknown command").code == 510
    with pytest.raises(AgiError):
        parse_result("garbage")


def test_refused_commands_and_hangup_notice_on_the_wire() -> None:
    """Documented answers on a real socket pair: ``510 Invalid or unknown command`` and the multi-line
    ``520-…`` / ``520 End of proper usage.`` raise ``AgiError`` and leave the session usable; the
    ``HANGUP`` notice before an answer marks the channel hung up; ``511`` raises ``AgiHangup``."""
    from telephony.fastagi import AgiHangup, AgiSession

    ours, theirs = socket.socketpair()
    with ours, theirs:
        session = AgiSession(ours, command_timeout=5)
        theirs.sendall(b"510 Invalid or unknown command\n")
        with pytest.raises(AgiError):
            session.command("NOSUCH THING")
        theirs.sendall(b"520-Invalid command syntax.  Proper usage follows:\n"
                       b" Usage: GET DATA <file to be streamed> [timeout] [maxdigits]\n"
                       b"520 End of proper usage.\n")
        with pytest.raises(AgiError):
            session.command("GET DATA")
        theirs.sendall(b"200 result=1\n")
        session.set_variable("X", 'a "quoted"\nvalue')
        assert theirs.recv(4096).endswith(b'SET VARIABLE X "a \\"quoted\\" value"\n')
        theirs.sendall(b"HANGUP\n200 result=0 endpos=100\n")
        assert session.stream_file("callcentre/welcome") == "" and session.hung_up
        with pytest.raises(AgiHangup):
            session.command("STREAM FILE x \"\"")
        fresh = AgiSession(ours, command_timeout=5)
        theirs.sendall(b"511 Command Not Permitted on a dead channel or intercept routine\n")
        with pytest.raises(AgiHangup):
            fresh.command("ANSWER")
