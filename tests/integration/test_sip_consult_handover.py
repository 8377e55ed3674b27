"""Attended transfer on hang-up, on the embedded SIP endpoint with real peers, through the dispatcher.

sipp is the caller (a looping 500 Hz pattern as its voice, into a sink that keeps what it hears); two
headless baresip softphones are the agents, each speaking its own tone (A 1400 Hz, B 2000 Hz). A takes
the call and starts a warm transfer to B; then A's softphone HANGS UP (its own BYE) during the
consultation — once after B answered, once while B's phone still rings (B answers afterwards). Either
way the call must not end: the caller is bridged to B (``ConsultHandedOver``), hears B's tone, and the
caller's voice reaches B — counted by our relay and by B's own dump of what it decoded (baresip's
``sndfile`` module). The database shows A's leg closed as transferred and B on the call. A third run:
B's phone rings out after A hung up — the caller keeps the music and is back in the queue at the
original place (nobody else may take them: A passed them on, B missed them), the transfer ``failed``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from callcentre.db.models import Call, QueueEntry, TransferRecord
from callcentre.db.session import make_engine, make_session_factory
from callcentre.domain.events import AgentAnswered, AgentNoAnswer, CallHungUp, CallQueued, ConsultHandedOver
from callcentre.settings import Settings
from routing import transfers as tr
from tests.integration.sip_fixtures import (
    CALLER_KNOWN,
    RunningPlatform,
    calls_show,
    seed_customers,
    sip_settings_fixture,  # noqa: F401  (fixture "sip_settings")
    start_platform,
    workdir,
)
from tests.integration.test_sip_consult import (
    TONE_A,
    TONE_B,
    CallerEar,
    caller_scenario,
    heard_by,
    seed_two_agents,
    set_available,
    tone_agent,
    wait_until,
)
from tests.sipp import SippRun

pytestmark = [pytest.mark.peer, pytest.mark.slow]


@pytest.mark.parametrize("consulted", ["answered", "ringing", "unanswered"])
def test_first_agent_hangs_up_during_consultation(sip_settings: Settings, tmp_path: Path, consulted: str) -> None:
    if consulted == "unanswered":
        sip_settings = sip_settings.replace("routing", ring_seconds=5.0)
    seed_customers(sip_settings)
    ringing = consulted != "answered"
    with tone_agent(workdir(tmp_path, "agentA"), "agentA", TONE_A) as first, \
         tone_agent(workdir(tmp_path, "agentB"), "agentB", TONE_B,
                    answermode="manual" if ringing else "auto") as second:
        a_id, b_id = seed_two_agents(sip_settings, first.contact, second.contact)
        running = start_platform(sip_settings)
        ear = CallerEar().start()
        work = workdir(tmp_path, "caller")
        run = SippRun(caller_scenario(work), running.target, work,
                      variables={"sinkport": str(ear.port), "caller": CALLER_KNOWN}, timeout_s=45).start()
        try:
            backend, log = running.backend, running.log
            dispatcher = running.platform.services["dispatcher"]
            call_id = log.wait_for(CallQueued, timeout=15).call_id
            log.wait_for(AgentAnswered, timeout=15, where=lambda e: e.agent_id == a_id)
            first.wait_event("CALL_ESTABLISHED", timeout=5)
            call = backend.calls[call_id]
            t0 = time.monotonic()
            wait_until(lambda: ear.heard(t0)["A"] > 10, 5, "the caller hears agent A")

            set_available(running, b_id)
            dispatcher.transfer(
                tr.TransferRequest(call_id, a_id, "warm", "agent", str(b_id), "approval", "needs a supervisor")
            )
            if ringing:
                second.wait_event("CALL_INCOMING", timeout=5)
            else:
                log.wait_for(AgentAnswered, timeout=10, where=lambda e: e.agent_id == b_id)
                second.wait_event("CALL_ESTABLISHED", timeout=5)
                time.sleep(0.5)  # the agents talk a moment

            first.hangup()  # agent A's softphone sends BYE mid-consultation
            first.wait_event("CALL_CLOSED", timeout=5)
            handed = log.wait_for(ConsultHandedOver, timeout=5)
            assert (handed.from_agent_id, handed.to_agent_id, handed.answered) == (a_id, b_id, not ringing)
            if ringing:
                # the caller waits on music for B; nobody talks to them
                assert call.agent is None and call.consult is not None and not call.leg.ended
                t1 = time.monotonic()
                time.sleep(2.5)  # the music has pauses: a window long enough to hold some of it
                held = ear.heard(t1)
                assert held["loud"] > 10 and held["A"] == 0 and held["B"] == 0, held
                if consulted == "unanswered":
                    rings_out_back_in_queue(running, call_id, b_id, ear)
                    second.wait_event("CALL_CLOSED", timeout=5)  # our CANCEL
                    backend.hangup(call_id)
                    assert run.wait(20) == 0, run.errors()
                    return
                second.accept()
                log.wait_for(ConsultHandedOver, timeout=10, where=lambda e: e.answered)
                second.wait_event("CALL_ESTABLISHED", timeout=5)

            assert call.agent is not None and call.agent.agent_id == b_id and call.consult is None
            assert not call.leg.ended and log.of(CallHungUp) == []
            caller_media, media_b = call.leg.media, call.agent.leg.media
            time.sleep(0.3)
            t2 = time.monotonic()
            before = (media_b.stats.relayed, caller_media.stats.relayed)
            wait_until(lambda: ear.heard(t2)["B"] > 20, 5, "the caller hears agent B")
            assert ear.heard(t2)["A"] == 0
            assert media_b.stats.relayed > before[0]  # B → caller
            wait_until(lambda: caller_media.stats.relayed > before[1] + 40, 5, "the caller's voice reaches B")
            time.sleep(1.0)  # margin for the softphone-side count below

            backend.hangup(call_id)
            assert run.wait(20) == 0, run.errors()
            second.wait_event("CALL_CLOSED", timeout=5)
        finally:
            run.stop()
            ear.stop()
            running.platform.stop()
    # B's own decoder heard the caller after the handover (A was gone by then, so it cannot be A's relay).
    at_b = heard_by(second)
    assert at_b["caller"] > 25, at_b
    shown = calls_show(sip_settings, call_id)
    legs = {s["agent_id"]: s for s in shown["segments"]}
    assert legs[a_id]["end_reason"] == "transferred" and legs[a_id]["transfer_kind"] == "warm"
    assert legs[b_id]["started_at"] is not None


def rings_out_back_in_queue(running: RunningPlatform, call_id: str, b_id: int, ear: CallerEar) -> None:
    missed = running.log.wait_for(AgentNoAnswer, timeout=10, where=lambda e: e.agent_id == b_id)
    assert missed.call_id == call_id
    call = running.backend.calls[call_id]
    assert not call.leg.ended and call.agent is None and call.consult is None and call.queued
    assert running.log.of(CallHungUp) == []
    t = time.monotonic()
    time.sleep(2.5)
    heard = ear.heard(t)
    assert heard["loud"] > 10 and heard["A"] == 0 and heard["B"] == 0, heard  # still the music
    engine = make_engine(running.settings.database.url)
    try:
        with make_session_factory(engine)() as session:
            entry = session.scalars(select(QueueEntry).where(QueueEntry.call_id == call_id)).one()
            db_call = session.get(Call, call_id)
            assert db_call is not None and db_call.state == "queued"
            assert entry.status == "waiting" and entry.enqueued_at == db_call.queued_at  # the original place
            record = session.scalars(select(TransferRecord).where(TransferRecord.call_id == call_id)).one()
            assert (record.status, record.reason, record.note) == ("failed", "approval", "needs a supervisor")
    finally:
        engine.dispose()
