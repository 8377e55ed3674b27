"""Registered mode: the endpoint REGISTERs to Debian's kamailio (registrar + record-routing proxy).

The caller (sipp) dials the number at kamailio, which looks up our registration and forwards the
call; the agent's softphone (baresip) registers to the same kamailio and we reach it by AOR.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from callcentre.domain.events import AgentAnswered, CallArrived, CallHungUp, CallQueued, DigitsReceived
from callcentre.settings import Settings
from telephony.base import AgentEndpoint
from tests.baresip import Baresip
from tests.integration.sip_fixtures import (
    CALLER_KNOWN,
    RunningPlatform,
    calls_show,
    seed_customers,
    sip_settings_fixture,  # noqa: F401  (fixture "sip_settings")
    start_platform,
    workdir,
)
from tests.kamailio import Kamailio, kamailio_fixture  # noqa: F401  (fixture "kamailio")
from tests.sipp import RtpSink, SippRun, render_scenario

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def registered_platform(settings: Settings, kamailio: Kamailio, hardened: bool = True) -> RunningPlatform:
    host, port = kamailio.address
    settings = settings.replace("sip", mode="registered", registrar=f"{host}:{port}", username="1000")
    seed_customers(settings)
    running = start_platform(settings, hardened=hardened)
    assert running.backend.registered.wait(10), kamailio.log()[-2000:]
    return running


@pytest.mark.parametrize("hardened", [True, False], ids=["hardened-client", "stock-client"])
def test_call_through_kamailio_reaches_ivr_and_queue(sip_settings: Settings, kamailio: Kamailio,
                                                     tmp_path: Path, hardened: bool) -> None:
    """With the stock client the endpoint registers itself (its own non-blocking REGISTER)."""
    running = registered_platform(sip_settings, kamailio, hardened)
    try:
        work = workdir(tmp_path, "caller")
        sink = RtpSink().start()
        scenario = render_scenario("ivr_call.xml", work, digits="1", hold_ms=1500, first_pause_ms=1500)
        host, port = kamailio.address
        run = SippRun(scenario, f"{host}:{port}", work, variables={"sinkport": str(sink.port),
                                                                   "caller": CALLER_KNOWN}, timeout_s=30)
        with run:
            rc = run.wait()
        sink.stop()
        assert rc == 0, run.errors() + kamailio.log()[-1500:]
        arrived = running.log.wait_for(CallArrived)
        assert arrived.dialled == "1000"
        assert [e.digits for e in running.log.of(DigitsReceived)] == ["1"]
        queued = running.log.wait_for(CallQueued)
        assert queued.queue == "billing"
        running.log.wait_for(CallHungUp)
        assert sink.loud_frames >= 50
        shown = calls_show(running.settings, arrived.call_id)
        assert shown["reason"] == "billing" and {i["key"] for i in shown["context"]} >= {"caller_id", "reason"}
    finally:
        running.platform.stop()


def test_agent_registered_at_kamailio_is_reached_by_aor(sip_settings: Settings, kamailio: Kamailio,
                                                        tmp_path: Path) -> None:
    running = registered_platform(sip_settings, kamailio)
    host, port = kamailio.address
    try:
        with Baresip(workdir(tmp_path, "agent01"), user="agent01", registrar=f"{host}:{port}") as agent:
            agent.wait_registered(timeout=10)
            work = workdir(tmp_path, "caller")
            sink = RtpSink().start()
            scenario = render_scenario("agent_call.xml", work, digits="2", first_pause_ms=800)
            run = SippRun(scenario, f"{host}:{port}", work, variables={"sinkport": str(sink.port),
                                                                       "caller": CALLER_KNOWN}, timeout_s=40)
            with run:
                queued = running.log.wait_for(CallQueued, timeout=15)
                running.backend.connect_agent(queued.call_id, AgentEndpoint(1, "agent01"), ring_seconds=10)
                running.log.wait_for(AgentAnswered, timeout=10)
                agent.wait_event("CALL_ESTABLISHED", timeout=5)
                loud = sink.loud_frames
                time.sleep(2.0)
                assert sink.loud_frames - loud > 20  # the agent's voice reaches the caller
                agent.hangup()
                hung = running.log.wait_for(CallHungUp, timeout=10)
                assert hung.by == "agent"
                assert run.wait(20) == 0, run.errors()
            sink.stop()
            shown = calls_show(running.settings, queued.call_id)
            assert shown["reason"] == "technical" and shown["context"] and "segments" in shown
    finally:
        running.platform.stop()


def test_blind_transfer_to_an_outside_number_through_the_proxy(sip_settings: Settings, kamailio: Kamailio,
                                                                tmp_path: Path) -> None:
    """``Transfer(number)`` dials ``sip:<number>@<registrar>``; here the "outside" phone is a baresip."""
    from callcentre.domain.context import CallContext
    from ivr.actions import Transfer

    running = registered_platform(sip_settings, kamailio)
    host, port = kamailio.address
    try:
        with Baresip(workdir(tmp_path, "outside"), user="5550000", registrar=f"{host}:{port}") as outside:
            outside.wait_registered(timeout=10)
            work = workdir(tmp_path, "caller")
            sink = RtpSink().start()
            scenario = render_scenario("agent_call.xml", work, digits="2", first_pause_ms=800)
            run = SippRun(scenario, f"{host}:{port}", work, variables={"sinkport": str(sink.port),
                                                                       "caller": CALLER_KNOWN}, timeout_s=40)
            with run:
                queued = running.log.wait_for(CallQueued, timeout=15)
                running.backend.perform(queued.call_id, Transfer(number="5550000",
                                                                 context=CallContext(queued.call_id)))
                outside.wait_event("CALL_ESTABLISHED", timeout=10)
                loud = sink.loud_frames
                time.sleep(1.5)
                assert sink.loud_frames - loud > 15  # the outside party's audio reaches the caller
                outside.hangup()
                hung = running.log.wait_for(CallHungUp, timeout=10)
                assert hung.by == "transfer"
                assert run.wait(20) == 0, run.errors()
            sink.stop()
    finally:
        running.platform.stop()
