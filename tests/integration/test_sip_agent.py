"""Agent legs: the endpoint rings the agent's softphone (a headless baresip) and bridges the audio.

The caller is sipp (IVR by RFC 2833 pcaps, then the shipped G.711 A-law speech pcap); the agent is
baresip playing a tone. Audio both ways: the caller's RTP sink hears the agent's tone after the
bridge; the caller's speech is relayed into the agent's leg (our relay counters, and baresip's own
RTP receive statistics when it prints them).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from callcentre.domain.events import AgentAnswered, AgentNoAnswer, CallArrived, CallHungUp, CallQueued
from callcentre.settings import Settings
from telephony.base import AgentEndpoint
from tests.baresip import Baresip
from tests.integration.sip_fixtures import (
    CALLER_KNOWN,
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


def start_caller(running: RunningPlatform, tmp_path: Path) -> tuple[SippRun, RtpSink]:
    work = workdir(tmp_path, "caller")
    sink = RtpSink().start()
    scenario = render_scenario("agent_call.xml", work, digits="2", first_pause_ms=800)
    run = SippRun(scenario, running.target, work, variables={"sinkport": str(sink.port), "caller": CALLER_KNOWN},
                  timeout_s=45)
    return run.start(), sink


def test_agent_answers_talks_both_ways_and_hangs_up(sip_platform: RunningPlatform, tmp_path: Path) -> None:
    with Baresip(workdir(tmp_path, "agent01"), user="agent01") as agent:
        run, sink = start_caller(sip_platform, tmp_path)
        try:
            queued = sip_platform.log.wait_for(CallQueued, timeout=15)
            call_id = queued.call_id
            sip_platform.backend.connect_agent(call_id, AgentEndpoint(1, agent.contact), ring_seconds=10)
            answered = sip_platform.log.wait_for(AgentAnswered, timeout=10)
            assert answered.call_id == call_id and answered.agent_id == 1
            agent.wait_event("CALL_ESTABLISHED", timeout=5)

            call = sip_platform.backend.calls[call_id]
            assert call.agent is not None
            caller_media, agent_media = call.leg.media, call.agent.leg.media
            loud_before = sink.loud_frames
            time.sleep(3.0)
            # agent → caller: the agent's tone reached the caller's RTP sink through our relay
            assert agent_media.stats.received_audio > 100 and agent_media.stats.received_loud > 5
            assert sink.loud_frames - loud_before > 30
            # caller → agent: the caller's speech pcap was received and relayed into the agent leg
            assert caller_media.stats.received_loud > 5
            assert caller_media.stats.relayed > 50

            # hold: the caller hears music, nothing is relayed either way; un-hold re-bridges
            sip_platform.backend.hold(call_id, True)
            time.sleep(0.3)
            relayed = (caller_media.stats.relayed, agent_media.stats.relayed)
            loud = sink.loud_frames
            time.sleep(1.5)
            assert (caller_media.stats.relayed, agent_media.stats.relayed) == relayed
            assert sink.loud_frames - loud > 10  # hold music
            sip_platform.backend.hold(call_id, False)
            time.sleep(1.0)
            assert agent_media.stats.relayed > relayed[1]

            agent.hangup()
            hung = sip_platform.log.wait_for(CallHungUp, timeout=10)
            assert hung.call_id == call_id and hung.by == "agent"
            assert run.wait(20) == 0, run.errors()  # the platform then ended the caller's leg (BYE)
        finally:
            run.stop()
            sink.stop()
    shown = calls_show(sip_platform.settings, call_id)
    assert shown["reason"] == "technical" and shown["context"]
    assert "segments" in shown


def test_agent_not_answering_gives_the_call_back_and_next_agent_gets_it(
    sip_platform: RunningPlatform, tmp_path: Path
) -> None:
    with Baresip(workdir(tmp_path, "agent02"), user="agent02", answermode="manual") as sleepy, \
         Baresip(workdir(tmp_path, "agent03"), user="agent03") as ready:
        run, sink = start_caller(sip_platform, tmp_path)
        try:
            queued = sip_platform.log.wait_for(CallQueued, timeout=15)
            call_id = queued.call_id
            sip_platform.backend.connect_agent(call_id, AgentEndpoint(2, sleepy.contact), ring_seconds=1.5)
            sleepy.wait_event("CALL_INCOMING", timeout=5)
            missed = sip_platform.log.wait_for(AgentNoAnswer, timeout=5)
            assert missed.call_id == call_id and missed.agent_id == 2
            sleepy.wait_event("CALL_CLOSED", timeout=5)  # we CANCELled the ringing leg
            assert call_id in sip_platform.backend.calls  # the caller is still there, on hold
            loud = sink.loud_frames
            time.sleep(1.0)
            assert sink.loud_frames > loud  # hold music keeps playing

            sip_platform.backend.connect_agent(call_id, AgentEndpoint(3, ready.contact), ring_seconds=10)
            answered = sip_platform.log.wait_for(AgentAnswered, timeout=10)
            assert answered.agent_id == 3
            sip_platform.backend.hangup(call_id)  # platform-side hang-up ends both legs
            ready.wait_event("CALL_CLOSED", timeout=5)
            assert run.wait(20) == 0, run.errors()
        finally:
            run.stop()
            sink.stop()
    assert not sip_platform.log.of(CallArrived)[1:]  # one call throughout
    shown = calls_show(sip_platform.settings, call_id)
    assert shown["reason"] == "technical" and shown["context"] and "segments" in shown


def seed_agent(settings: Settings, contact: str) -> int:
    from callcentre.db.models import Agent, AgentSkill, Queue, Skill
    from callcentre.db.session import make_engine, make_session_factory
    from callcentre.passwords import hash_password

    engine = make_engine(settings.database.url)
    with make_session_factory(engine)() as session:
        skill = Skill(name="technical")
        session.add(Queue(name="technical", required_skills=[["technical", 2]]))
        agent = Agent(login="agent07", name="Agent Seven", password_hash=hash_password("x"), state="available",
                      sip_contact=contact, softphone="sip")
        agent.skills.append(AgentSkill(skill=skill, proficiency=3))
        session.add(agent)
        session.commit()
        agent_id = agent.id
    engine.dispose()
    return agent_id


def test_router_offers_the_queued_call_to_an_available_sip_agent(sip_settings: Settings, tmp_path: Path) -> None:
    """End to end: IVR by DTMF → queued → the dispatcher rings the agent's baresip → talk → agent hangs up."""
    seed_customers(sip_settings)
    with Baresip(workdir(tmp_path, "agent07"), user="agent07") as agent:
        agent_id = seed_agent(sip_settings, agent.contact)
        running = start_platform(sip_settings)
        try:
            run, sink = start_caller(running, tmp_path)
            try:
                queued = running.log.wait_for(CallQueued, timeout=15)
                answered = running.log.wait_for(AgentAnswered, timeout=15)
                assert answered.call_id == queued.call_id and answered.agent_id == agent_id
                agent.wait_event("CALL_ESTABLISHED", timeout=5)
                loud = sink.loud_frames
                time.sleep(2.0)
                assert sink.loud_frames - loud > 20  # the agent's voice reaches the caller
                agent.hangup()
                hung = running.log.wait_for(CallHungUp, timeout=10, where=lambda e: e.by == "agent")
                assert hung.call_id == queued.call_id
                # (the post-call survey may now speak to the caller; end it rather than wait it out)
                running.backend.hangup(queued.call_id)
                assert run.wait(20) == 0, run.errors()
            finally:
                run.stop()
                sink.stop()
            shown = calls_show(sip_settings, queued.call_id)
            assert shown["context"] and shown["reason"] == "technical"
            assert len(shown["segments"]) == 1
            segment = shown["segments"][0]
            assert segment["agent_id"] == agent_id and segment["started_at"] is not None
        finally:
            running.platform.stop()


def test_unanswered_offer_returns_the_call_to_the_queue_and_the_next_agent_gets_it(
    sip_settings: Settings, tmp_path: Path
) -> None:
    """Dispatcher end to end: agent07's phone rings out (we CANCEL), the call goes back to its place,
    agent07 goes Not Ready (one miss allowed here), agent08 becomes available and gets the call."""
    from callcentre.db.models import Agent
    from callcentre.db.session import make_engine, make_session_factory
    from callcentre.domain.events import AgentStateChanged

    settings = sip_settings.replace("routing", ring_seconds=2.0, max_consecutive_misses=1)
    seed_customers(settings)
    with Baresip(workdir(tmp_path, "agent07"), user="agent07", answermode="manual") as sleepy, \
         Baresip(workdir(tmp_path, "agent08"), user="agent08") as ready:
        sleepy_id = seed_agent(settings, sleepy.contact)
        engine = make_engine(settings.database.url)
        with make_session_factory(engine)() as session:
            first = session.get(Agent, sleepy_id)
            assert first is not None
            second = Agent(login="agent08", name="Agent Eight", password_hash="x", state="logged_out",
                           sip_contact=ready.contact, softphone="sip")
            second.skills.append(type(first.skills[0])(skill=first.skills[0].skill, proficiency=3))
            session.add(second)
            session.commit()
            ready_id = second.id
        running = start_platform(settings)
        try:
            run, sink = start_caller(running, tmp_path)
            try:
                queued = running.log.wait_for(CallQueued, timeout=15)
                missed = running.log.wait_for(AgentNoAnswer, timeout=15)
                assert missed.agent_id == sleepy_id and missed.call_id == queued.call_id
                sleepy.wait_event("CALL_CLOSED", timeout=5)
                with make_session_factory(engine)() as session:
                    agent = session.get(Agent, ready_id)
                    assert agent is not None
                    agent.state = "available"
                    session.commit()
                running.platform.bus.publish(AgentStateChanged(ready_id, "available"))
                answered = running.log.wait_for(AgentAnswered, timeout=15)
                assert answered.agent_id == ready_id and answered.call_id == queued.call_id
                running.backend.hangup(queued.call_id)
                assert run.wait(20) == 0, run.errors()
            finally:
                run.stop()
                sink.stop()
            shown = calls_show(settings, queued.call_id)
            by_agent = {s["agent_id"]: s for s in shown["segments"]}
            assert set(by_agent) == {sleepy_id, ready_id}
            assert by_agent[sleepy_id]["started_at"] is None  # offered, never answered
            assert by_agent[ready_id]["started_at"] is not None
        finally:
            running.platform.stop()
            engine.dispose()


def test_blind_transfer_to_another_agent(sip_platform: RunningPlatform, tmp_path: Path) -> None:
    with Baresip(workdir(tmp_path, "agent04"), user="agent04") as first, \
         Baresip(workdir(tmp_path, "agent05"), user="agent05", answermode="manual") as second:
        run, sink = start_caller(sip_platform, tmp_path)
        try:
            queued = sip_platform.log.wait_for(CallQueued, timeout=15)
            call_id = queued.call_id
            sip_platform.backend.connect_agent(call_id, AgentEndpoint(4, first.contact), ring_seconds=10)
            sip_platform.log.wait_for(AgentAnswered, timeout=10, where=lambda e: e.agent_id == 4)
            sip_platform.backend.transfer_to_agent(call_id, AgentEndpoint(5, second.contact), ring_seconds=10)
            first.wait_event("CALL_CLOSED", timeout=5)  # the first agent's leg ended with our BYE
            second.wait_event("CALL_INCOMING", timeout=5)
            loud = sink.loud_frames
            time.sleep(1.0)
            assert sink.loud_frames - loud > 10  # the caller hears hold music while agent05 rings
            second.accept()
            sip_platform.log.wait_for(AgentAnswered, timeout=10, where=lambda e: e.agent_id == 5)
            call = sip_platform.backend.calls[call_id]
            assert call.agent is not None and call.agent.agent_id == 5
            time.sleep(1.5)
            assert call.agent.leg.media.stats.relayed > 20  # agent05's audio flows to the caller
            second.hangup()
            assert run.wait(20) == 0, run.errors()
        finally:
            run.stop()
            sink.stop()
