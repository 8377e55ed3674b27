"""Real calls from sipp (Debian sip-tester) into the embedded SIP endpoint on loopback.

The caller navigates the default IVR flow with the RFC 2833 digit pcaps that sip-tester ships;
the caller's SDP points at a Python RTP sink so the test can check the prompt audio it receives
is real, non-silent G.711. The database is checked through ``callcentre calls show ID --json``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from callcentre.domain.events import CallArrived, CallEnded, CallHungUp, CallQueued, DigitsReceived, InputTimedOut
from callcentre.settings import Settings
from ivr.actions import Gather, Prompt
from tests.integration.sip_fixtures import (
    ACCOUNT,
    CALLER_KNOWN,
    CALLER_UNKNOWN,
    PIN,
    RunningPlatform,
    calls_show,
    seed_customers,
    sip_platform_fixture,  # noqa: F401  (fixture "sip_platform")
    sip_settings_fixture,  # noqa: F401  (fixture "sip_settings")
    start_platform,
    workdir,
)
from tests.sipp import RtpSink, SippRun, render_scenario

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def place_call(running: RunningPlatform, tmp_path: Path, name: str, digits: str, caller: str,
               hold_ms: int = 1500, first_pause_ms: int = 1500) -> tuple[int, RtpSink, SippRun]:
    work = workdir(tmp_path, name)
    sink = RtpSink().start()
    scenario = render_scenario("ivr_call.xml", work, digits=digits, hold_ms=hold_ms, first_pause_ms=first_pause_ms)
    run = SippRun(scenario, running.target, work, variables={"sinkport": str(sink.port), "caller": caller},
                  timeout_s=40)
    try:
        with run:
            rc = run.wait()
    finally:
        sink.stop()
    return rc, sink, run


def test_known_caller_navigates_menu_by_dtmf_and_is_queued(sip_platform: RunningPlatform, tmp_path: Path) -> None:
    work = workdir(tmp_path, "known")
    sink = RtpSink().start()
    scenario = render_scenario("ivr_call.xml", work, digits="2", hold_ms=5000, first_pause_ms=1500)
    run = SippRun(scenario, sip_platform.target, work, variables={"sinkport": str(sink.port), "caller": CALLER_KNOWN},
                  timeout_s=40).start()
    try:
        queued_early = sip_platform.log.wait_for(CallQueued, timeout=10)
        # A waiting caller's announcement (the dispatcher sends a one-key Gather): hold music resumes after it.
        announcement = Gather(prompts=(Prompt("invalid", "x"),), timeout_seconds=0.3)
        sip_platform.backend.perform(queued_early.call_id, announcement)
        sip_platform.log.wait_for(InputTimedOut, timeout=10)
        loud = sink.loud_frames
        time.sleep(1.0)
        assert sink.loud_frames - loud > 10
        rc = run.wait()
    finally:
        run.stop()
        sink.stop()
    assert rc == 0, run.errors()

    arrived = sip_platform.log.wait_for(CallArrived)
    assert arrived.backend == "sip" and arrived.caller_id == CALLER_KNOWN and arrived.dialled == "1000"
    assert [e.digits for e in sip_platform.log.of(DigitsReceived)] == ["2"]
    queued = sip_platform.log.wait_for(CallQueued)
    assert queued.call_id == arrived.call_id and queued.queue == "technical"
    sip_platform.log.wait_for(CallHungUp)

    # The caller heard real prompt audio: G.711 μ-law, most 20 ms frames clearly above silence.
    assert sink.payload_types == {0}
    assert sink.packets >= 100
    assert sink.loud_frames >= 50, f"only {sink.loud_frames} non-silent frames of {sink.packets}"

    shown = calls_show(sip_platform.settings, arrived.call_id)
    context = {item["key"]: item["value"] for item in shown["context"]}
    assert shown["backend"] == "sip" and shown["state"] in ("queued", "ended")
    assert shown["reason"] == "technical" and shown["queued_at"] is not None
    assert context["caller_id"] == CALLER_KNOWN and context["reason"] == "technical"
    assert context["identified_by"] == "caller_id"
    assert "segments" in shown


def test_unknown_caller_types_account_pin_and_menu_choice(sip_platform: RunningPlatform, tmp_path: Path) -> None:
    """Account number + #, then the PIN, then 1 for billing: every key from the shipped pcaps."""
    digits = f"{ACCOUNT}#,{PIN},1"
    rc, sink, run = place_call(sip_platform, tmp_path, "account", digits=digits, caller=CALLER_UNKNOWN,
                               first_pause_ms=1000)
    assert rc == 0, run.errors()
    arrived = sip_platform.log.wait_for(CallArrived)
    queued = sip_platform.log.wait_for(CallQueued, timeout=15)
    assert queued.queue == "billing"
    assert [e.digits for e in sip_platform.log.of(DigitsReceived)] == [ACCOUNT, PIN, "1"]
    assert sink.loud_frames >= 50

    shown = calls_show(sip_platform.settings, arrived.call_id)
    context = {item["key"]: item for item in shown["context"]}
    assert context["account_number"]["value"] == ACCOUNT
    assert context["reason"]["value"] == "billing"
    assert context["customer_id"]["verified"] is True
    # The PIN is never stored in clear.
    assert all(PIN not in item["value"] for item in shown["context"])


def test_caller_hanging_up_mid_ivr_is_abandoned_at_that_step(sip_platform: RunningPlatform, tmp_path: Path) -> None:
    rc, _, run = place_call(sip_platform, tmp_path, "midivr", digits=f"{ACCOUNT}#", caller=CALLER_UNKNOWN,
                            hold_ms=800, first_pause_ms=1000)
    assert rc == 0, run.errors()
    arrived = sip_platform.log.wait_for(CallArrived)
    ended = sip_platform.log.wait_for(CallEnded)
    assert ended.outcome == "abandoned"
    assert not sip_platform.log.of(CallQueued)

    shown = calls_show(sip_platform.settings, arrived.call_id)
    assert shown["state"] == "ended" and shown["outcome"] == "abandoned"
    assert shown["ended_at_step"] == ended.at_step and ended.at_step
    assert ended.at_step == "identify"  # hung up while asked for the PIN, after typing the account
    assert [e.digits for e in sip_platform.log.of(DigitsReceived)] == [ACCOUNT]
    context = {i["key"]: i["value"] for i in shown["context"]}
    assert context["caller_id"] == CALLER_UNKNOWN and context["dialled_number"] == "1000"


def test_same_call_on_the_stock_pyvoip_client(sip_settings: Settings, tmp_path: Path) -> None:
    """``hardened=False``: stock pyVoIP 1.6.8 ``SIPClient`` with the endpoint's own receive loop."""
    seed_customers(sip_settings)
    running = start_platform(sip_settings, hardened=False)
    try:
        assert type(running.backend.client).__module__ == "pyVoIP.SIP"
        rc, sink, run = place_call(running, tmp_path, "stock", digits="3", caller=CALLER_KNOWN,
                                   hold_ms=500, first_pause_ms=1000)
        assert rc == 0, run.errors()
        queued = running.log.wait_for(CallQueued)
        assert queued.queue == "sales" and sink.loud_frames >= 30
        assert calls_show(sip_settings, queued.call_id)["reason"] == "sales"
    finally:
        running.platform.stop()
