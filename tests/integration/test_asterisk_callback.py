"""Callback dialling on the Asterisk backend (agent first, then the customer), against the loopback AMI peer.

No Asterisk can run here (no Debian 12 package). The peer (``tests/ami_peer.py``) speaks the Manager
protocol as the Asterisk documentation describes it and plays what Asterisk reports for the
``[callcentre-callback]`` context that ``callcentre asterisk config`` prints: ``Originate`` (async) of the
agent → ``OriginateResponse``; the context's ``Dial`` of the customer → ``DialBegin`` / ``DialEnd``
(``DialStatus``) / the customer channel's ``Hangup`` with its Q.850 ``Cause`` / ``BridgeEnter``. Each
test names the documented behaviour it reproduces and checks the events on a real ``EventBus`` and
the exact AMI action fields on the wire.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from callcentre.bus import EventBus
from callcentre.domain.events import (
    AgentAnswered,
    AgentNoAnswer,
    CallbackAnswered,
    CallbackUnanswered,
    CallHungUp,
)
from callcentre.settings import Settings
from telephony.asterisk import AsteriskBackend, callback_reason
from telephony.base import AgentEndpoint, can_call_back
from tests.ami_peer import AmiPeer, linked_backend

NUMBER = "+15550100077"
CALL = "call-fixture-a"
CALLER_CHANNEL = "PJSIP/trunk-00000011"


def wait_for(condition: Callable[[], Any], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


class Recorder:
    KINDS = (AgentAnswered, AgentNoAnswer, CallbackAnswered, CallbackUnanswered, CallHungUp)

    def __init__(self, bus: EventBus) -> None:
        self.events: list[Any] = []
        for kind in self.KINDS:
            bus.subscribe(kind, self.events.append)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def summary(self) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for e in self.events:
            extra = getattr(e, "reason", None) or getattr(e, "by", None)
            out.append((type(e).__name__, e.call_id, getattr(e, "agent_id", None), extra))
        return out


@pytest.fixture
def peer() -> Iterator[AmiPeer]:
    with AmiPeer() as p:
        yield p


@pytest.fixture
def backend(peer: AmiPeer) -> Iterator[tuple[AsteriskBackend, Recorder]]:
    bus = EventBus()
    recorder = Recorder(bus)
    with linked_backend(peer, bus) as be:
        yield be, recorder


def ended_original_call(peer: AmiPeer, be: AsteriskBackend, recorder: Recorder) -> None:
    """The caller's first call: tagged by the FastAGI (``VarSet``), then hung up (they chose a callback)."""
    peer.replay("call_setup.txt")
    assert wait_for(lambda: be.call(CALL) is not None)
    peer.emit({"Event": "Hangup", "Channel": CALLER_CHANNEL, "Uniqueid": "1700000011.1", "Cause": "16",
               "Cause-txt": "Normal Clearing"})
    assert wait_for(lambda: recorder.of(CallHungUp))
    recorder.events.clear()


def variables(action: dict[str, str]) -> dict[str, str]:
    return dict(v.partition("=")[::2] for v in action["Variable"].split(","))


def test_answered_callback_is_bridged_and_customer_hang_up_ends_it(
        peer: AmiPeer, backend: tuple[AsteriskBackend, Recorder], caplog: pytest.LogCaptureFixture) -> None:
    """Documented ``Originate`` (``Async: true``, ``Timeout`` in ms, ``Variable: k=v`` lines) of the agent's
    endpoint into ``callcentre-callback``; ``OriginateResponse`` ``Success``/``Reason: 4`` →
    ``AgentAnswered``; the dialplan's ``Dial`` → ``DialBegin``, ``DialEnd`` ``DialStatus: ANSWER`` and the
    customer channel's ``BridgeEnter`` → ``CallbackAnswered``. The customer's ``Hangup`` then → one
    ``CallHungUp(by="caller")`` and an AMI ``Hangup`` of the agent's leg (kept up by ``Dial`` option
    ``g``). The original call id is accepted although its own leg ended; the number is only in the
    ``Originate`` variables, never in a log record."""
    be, recorder = backend
    caplog.set_level(logging.DEBUG)
    ended_original_call(peer, be, recorder)
    assert can_call_back(be)

    be.call_back(CALL, NUMBER, AgentEndpoint(7, "sip:agent07@127.0.0.1:5070"), ring_seconds=15,
                 customer_ring_seconds=25)
    assert wait_for(lambda: recorder.of(CallbackAnswered))
    originate = peer.actions_named("Originate")[0]
    assert {k: originate[k] for k in ("Channel", "Context", "Exten", "Priority", "Timeout", "Async")} == {
        "Channel": "PJSIP/agent07", "Context": "callcentre-callback", "Exten": "s", "Priority": "1",
        "Timeout": "15000", "Async": "true"}
    assert originate["ActionID"].startswith(f"cb-{CALL}-7-")
    assert variables(originate) == {"CALLCENTRE_CALL_ID": CALL, "CALLCENTRE_AGENT_ID": "7",
                                    "CALLCENTRE_CALLBACK_NUMBER": NUMBER, "CALLCENTRE_CALLBACK_RING": "25"}
    assert not peer.actions_named("Bridge"), "the dialplan's Dial bridges; no AMI Bridge"
    assert recorder.summary() == [("AgentAnswered", CALL, 7, None), ("CallbackAnswered", CALL, 7, None)]

    call = be.call(CALL)
    assert call is not None
    agent_channel = call.agent_channel
    customer = peer.callback_channels[agent_channel]
    assert call.channel == customer != CALLER_CHANNEL, "the customer's leg is now the call's channel"
    peer.emit({"Event": "BridgeLeave", "Channel": customer, "Uniqueid": call.uniqueid})
    peer.emit({"Event": "Hangup", "Channel": customer, "Uniqueid": call.uniqueid, "Cause": "16",
               "Cause-txt": "Normal Clearing"})
    assert wait_for(lambda: [a for a in peer.actions_named("Hangup") if a["Channel"] == agent_channel])
    assert wait_for(lambda: agent_channel not in peer.live_channels())
    time.sleep(0.1)
    assert recorder.summary()[2:] == [("CallHungUp", CALL, None, "caller")]
    assert not any(NUMBER in r.getMessage() or NUMBER[1:] in r.getMessage() for r in caplog.records)


def test_connected_callback_is_a_normal_call_hold_and_platform_hang_up(
        peer: AmiPeer, backend: tuple[AsteriskBackend, Recorder]) -> None:
    """After ``CallbackAnswered`` the call is like any connected call: ``hold`` → documented ``Redirect`` of
    the customer's channel to ``callcentre-hold`` (the agent's leg waits in the context after ``Dial``),
    un-hold → ``Bridge`` customer ↔ agent, ``hangup`` → ``Hangup`` of the customer's channel, reported
    once as ``CallHungUp(by="platform")``, and the agent's leg is ended too."""
    be, recorder = backend
    ended_original_call(peer, be, recorder)
    be.call_back(CALL, NUMBER, AgentEndpoint(3, "pjsip:agent03"), ring_seconds=10, customer_ring_seconds=20)
    assert wait_for(lambda: recorder.of(CallbackAnswered))
    call = be.call(CALL)
    assert call is not None
    customer, agent_channel = call.channel, call.agent_channel
    be.hold(CALL, True)
    be.hold(CALL, False)
    be.hangup(CALL)
    assert wait_for(lambda: recorder.of(CallHungUp))
    assert wait_for(lambda: len(peer.actions_named("Hangup")) == 2)
    redirect = peer.actions_named("Redirect")[0]
    assert (redirect["Channel"], redirect["Context"], redirect["Exten"]) == (customer, "callcentre-hold", "s")
    bridge = peer.actions_named("Bridge")[0]
    assert (bridge["Channel1"], bridge["Channel2"]) == (customer, agent_channel)
    assert [a["Channel"] for a in peer.actions_named("Hangup")] == [customer, agent_channel]
    time.sleep(0.1)
    assert [(e.by, e.call_id) for e in recorder.of(CallHungUp)] == [("platform", CALL)]


def test_agent_hangs_up_after_connection(peer: AmiPeer, backend: tuple[AsteriskBackend, Recorder]) -> None:
    """The agent's channel ``Hangup`` during the conversation → one ``CallHungUp(by="agent")``; the
    customer's leg is hung up by the platform and its own ``Hangup`` publishes nothing more."""
    be, recorder = backend
    ended_original_call(peer, be, recorder)
    be.call_back(CALL, NUMBER, AgentEndpoint(4, "PJSIP/agent04"), ring_seconds=10, customer_ring_seconds=20)
    assert wait_for(lambda: recorder.of(CallbackAnswered))
    call = be.call(CALL)
    assert call is not None
    customer = call.channel
    peer.emit({"Event": "Hangup", "Channel": call.agent_channel, "Uniqueid": call.agent_uniqueid, "Cause": "16",
               "Cause-txt": "Normal Clearing"})
    assert wait_for(lambda: [a for a in peer.actions_named("Hangup") if a["Channel"] == customer])
    assert wait_for(lambda: customer not in peer.live_channels())
    time.sleep(0.1)
    assert recorder.summary() == [("AgentAnswered", CALL, 4, None), ("CallbackAnswered", CALL, 4, None),
                                  ("CallHungUp", CALL, None, "agent")]


def test_connected_callback_passed_to_another_agent(peer: AmiPeer, backend: tuple[AsteriskBackend, Recorder]) -> None:
    """A transfer's ``connect_agent`` on a connected callback works as on any call: a second agent who
    does not answer (``OriginateResponse`` Failure) → ``AgentNoAnswer`` and the customer stays; one who
    answers → ``Bridge`` of the customer's channel with theirs and ``AgentAnswered``; their ``Hangup``
    later ends the call once (``CallHungUp(by="agent")``) and the customer's leg is hung up."""
    be, recorder = backend
    ended_original_call(peer, be, recorder)
    be.call_back(CALL, NUMBER, AgentEndpoint(4, "pjsip:agent04"), ring_seconds=10, customer_ring_seconds=20)
    assert wait_for(lambda: recorder.of(CallbackAnswered))
    call = be.call(CALL)
    assert call is not None
    customer = call.channel
    peer.originate_outcome = "noanswer"
    be.connect_agent(CALL, AgentEndpoint(11, "pjsip:agent11"), ring_seconds=5)
    assert wait_for(lambda: recorder.of(AgentNoAnswer))
    peer.originate_outcome = "answer"
    be.connect_agent(CALL, AgentEndpoint(12, "pjsip:agent12"), ring_seconds=5)
    assert wait_for(lambda: len(recorder.of(AgentAnswered)) == 2)
    bridge = peer.actions_named("Bridge")[0]
    assert (bridge["Channel1"], bridge["Channel2"]) == (customer, call.agent_channel)
    assert call.agent_channel.startswith("PJSIP/agent12-")
    peer.emit({"Event": "Hangup", "Channel": call.agent_channel, "Uniqueid": call.agent_uniqueid, "Cause": "16",
               "Cause-txt": "Normal Clearing"})
    assert wait_for(lambda: recorder.of(CallHungUp))
    assert wait_for(lambda: [a for a in peer.actions_named("Hangup") if a["Channel"] == customer])
    time.sleep(0.1)
    assert recorder.summary() == [("AgentAnswered", CALL, 4, None), ("CallbackAnswered", CALL, 4, None),
                                  ("AgentNoAnswer", CALL, 11, None), ("AgentAnswered", CALL, 12, None),
                                  ("CallHungUp", CALL, None, "agent")]


@pytest.mark.parametrize(("outcome", "reason"), [
    ("busy", "busy"), ("noanswer", "no-answer"), ("rejected", "rejected"), ("congestion", "failed"),
    ("chanunavail", "failed"),
])
def test_customer_does_not_answer(peer: AmiPeer, backend: tuple[AsteriskBackend, Recorder], outcome: str,
                                  reason: str) -> None:
    """Documented ``DialEnd`` ``DialStatus`` (BUSY, NOANSWER, CONGESTION) with the customer channel's
    ``Hangup`` ``Cause`` (17 user busy; 21 call rejected, which Asterisk reports with ``DialStatus:
    NOANSWER``; 16 after a ring timeout; 34 congestion), or no customer channel at all
    (CHANUNAVAIL: ``Dial`` returns at once): ``AgentAnswered`` then ``CallbackUnanswered(reason)``, the
    agent's leg ended by the dialplan's ``Hangup()``, and never ``CallHungUp`` or ``CallbackAnswered``."""
    be, recorder = backend
    peer.callback_outcome = outcome
    ended_original_call(peer, be, recorder)
    be.call_back(CALL, NUMBER, AgentEndpoint(5, "pjsip:agent05"), ring_seconds=10, customer_ring_seconds=20)
    assert wait_for(lambda: recorder.of(CallbackUnanswered))
    time.sleep(0.2)
    assert recorder.summary() == [("AgentAnswered", CALL, 5, None), ("CallbackUnanswered", CALL, 5, reason)]
    assert peer.live_channels() == {"PJSIP/trunk-00000012"}, "both callback legs gone (the other fixture call is up)"
    assert [a["Action"] for a in peer.actions if a["Action"] not in {"Login", "Ping", "CoreShowChannels"}] == [
        "Originate"]
    be.hangup(CALL)  # a late hang-up of a settled attempt does nothing
    assert not peer.actions_named("Hangup")


@pytest.mark.parametrize("lost", ["everything", "bridge-enter"])
def test_backstop_when_dial_events_are_lost(peer: AmiPeer, backend: tuple[AsteriskBackend, Recorder],
                                            monkeypatch: pytest.MonkeyPatch, lost: str) -> None:
    """Events can be lost (a PBX under load, a manager that missed them): after the agent's ring time +
    the customer's + the action timeout (+ a slack, 0 here) a callback still dialling is settled. With
    nothing after ``DialBegin`` → ``CallbackUnanswered("failed")`` and an AMI ``Hangup`` of the agent's
    leg; with ``DialEnd: ANSWER`` but no ``BridgeEnter`` → ``CallbackAnswered`` (the Dial did answer)."""
    import telephony.asterisk as asterisk_module

    monkeypatch.setattr(asterisk_module, "CALLBACK_SETTLE_SLACK", 0.0)
    be, recorder = backend
    peer.callback_outcome = "none"
    ended_original_call(peer, be, recorder)
    be.call_back(CALL, NUMBER, AgentEndpoint(2, "pjsip:agent02"), ring_seconds=0.2, customer_ring_seconds=0.2)
    assert wait_for(lambda: recorder.of(AgentAnswered))
    call = be.call(CALL)
    assert call is not None
    if lost == "bridge-enter":
        peer.emit({"Event": "DialBegin", "Channel": call.agent_channel, "Uniqueid": call.agent_uniqueid,
                   "DestChannel": "PJSIP/trunk-00009999", "DestUniqueid": "1700000999.1"})
        peer.emit({"Event": "DialEnd", "Channel": call.agent_channel, "Uniqueid": call.agent_uniqueid,
                   "DestChannel": "PJSIP/trunk-00009999", "DestUniqueid": "1700000999.1", "DialStatus": "ANSWER"})
        assert wait_for(lambda: recorder.of(CallbackAnswered), 6)
        assert not peer.actions_named("Hangup")
    else:
        agent_channel = call.agent_channel
        assert wait_for(lambda: recorder.of(CallbackUnanswered), 6)
        assert [e.reason for e in recorder.of(CallbackUnanswered)] == ["failed"]
        assert wait_for(lambda: [a["Channel"] for a in peer.actions_named("Hangup")] == [agent_channel])
    assert not recorder.of(CallHungUp)


def test_agent_does_not_answer(peer: AmiPeer, backend: tuple[AsteriskBackend, Recorder]) -> None:
    """Documented ``OriginateResponse`` ``Response: Failure`` (``Reason: 3`` no answer) for the agent's leg:
    ``AgentNoAnswer`` only; the customer is never dialled."""
    be, recorder = backend
    peer.originate_outcome = "noanswer"
    ended_original_call(peer, be, recorder)
    be.call_back(CALL, NUMBER, AgentEndpoint(6, "pjsip:agent06"), ring_seconds=5, customer_ring_seconds=20)
    assert wait_for(lambda: recorder.of(AgentNoAnswer))
    time.sleep(0.2)
    assert recorder.summary() == [("AgentNoAnswer", CALL, 6, None)]
    assert not peer.callback_channels


def test_retry_after_unanswered_and_refusals(peer: AmiPeer, backend: tuple[AsteriskBackend, Recorder]) -> None:
    """A second attempt for the same call after ``CallbackUnanswered`` gets its own ``ActionID`` and is
    answered; a number that is not diallable, or a call back while the callback is still connected,
    is refused with a clear ``ValueError`` that does not echo the number, and nothing is sent."""
    be, recorder = backend
    peer.callback_outcome = "busy"
    ended_original_call(peer, be, recorder)
    agent = AgentEndpoint(8, "pjsip:agent08")
    be.call_back(CALL, NUMBER, agent, ring_seconds=5, customer_ring_seconds=20)
    assert wait_for(lambda: recorder.of(CallbackUnanswered))
    peer.callback_outcome = "answer"
    be.call_back(CALL, NUMBER, agent, ring_seconds=5, customer_ring_seconds=20)
    assert wait_for(lambda: recorder.of(CallbackAnswered))
    first, second = peer.actions_named("Originate")
    assert first["ActionID"] != second["ActionID"]
    with pytest.raises(ValueError, match="still connected"):
        be.call_back(CALL, NUMBER, agent, ring_seconds=5, customer_ring_seconds=20)
    with pytest.raises(ValueError, match="not a diallable number") as refused:
        be.call_back("call-other", "+1555;Dial(x)", agent, ring_seconds=5, customer_ring_seconds=20)
    assert "1555" not in str(refused.value)
    assert len(peer.actions_named("Originate")) == 2
    assert [e[0] for e in recorder.summary()] == ["AgentAnswered", "CallbackUnanswered", "AgentAnswered",
                                                 "CallbackAnswered"]


def test_link_dropped_while_connected_is_resynchronised(peer: AmiPeer,
                                                         backend: tuple[AsteriskBackend, Recorder]) -> None:
    """Documented: Asterisk does not replay events to a manager that reconnects. The customer hangs up
    while the link is down; after the reconnect ``CoreShowChannels`` no longer lists the customer's
    channel → one ``CallHungUp(by="caller")`` and the agent's leg is hung up."""
    be, recorder = backend
    link = be.link
    assert link is not None
    ended_original_call(peer, be, recorder)
    be.call_back(CALL, NUMBER, AgentEndpoint(9, "pjsip:agent09"), ring_seconds=5, customer_ring_seconds=20)
    assert wait_for(lambda: recorder.of(CallbackAnswered))
    call = be.call(CALL)
    assert call is not None
    agent_channel = call.agent_channel
    peer.pause()
    peer.drop_connections()
    assert wait_for(lambda: not link.linked, 2)
    peer.emit({"Event": "Hangup", "Channel": call.channel, "Uniqueid": call.uniqueid, "Cause": "16",
               "Cause-txt": "Normal Clearing"})  # nobody connected: lost
    peer.resume()
    assert wait_for(lambda: recorder.of(CallHungUp), 8)
    assert wait_for(lambda: [a for a in peer.actions_named("Hangup") if a["Channel"] == agent_channel])
    assert [(e.by, e.call_id) for e in recorder.of(CallHungUp)] == [("caller", CALL)]


def test_platform_hangup_while_the_customer_rings_ends_the_attempt(
    peer: AmiPeer, backend: tuple[AsteriskBackend, Recorder]
) -> None:
    """The console's hang-up while the customer rings is ``hangup(call_id)``: one AMI ``Hangup`` of the
    AGENT's channel (the customer's is left to app_dial), which Asterisk reports as ``DialEnd``
    ``DialStatus: CANCEL``, the customer channel's ``Hangup`` (16) and the agent's → exactly
    ``CallbackUnanswered("agent-ended")``, never ``CallHungUp``."""
    be, recorder = backend
    peer.callback_outcome = "ring"
    ended_original_call(peer, be, recorder)
    be.call_back(CALL, NUMBER, AgentEndpoint(7, "pjsip:agent07"), ring_seconds=10, customer_ring_seconds=20)
    assert wait_for(lambda: recorder.of(AgentAnswered))
    call = be.call(CALL)
    assert call is not None
    assert wait_for(lambda: call.callback is not None and call.callback.state == "dialling")
    agent_channel = call.agent_channel
    be.hangup(CALL)
    assert wait_for(lambda: recorder.of(CallbackUnanswered))
    time.sleep(0.2)
    assert recorder.summary() == [("AgentAnswered", CALL, 7, None), ("CallbackUnanswered", CALL, 7, "agent-ended")]
    assert [a["Channel"] for a in peer.actions_named("Hangup")] == [agent_channel]
    assert peer.live_channels() == {"PJSIP/trunk-00000012"}, "both callback legs gone"
    be.hangup(CALL)  # a repeated hang-up of the settled attempt sends nothing
    assert len(peer.actions_named("Hangup")) == 1


def test_agent_hanging_up_their_phone_while_the_customer_rings(
    peer: AmiPeer, backend: tuple[AsteriskBackend, Recorder]
) -> None:
    """The agent's own phone hangs up on ringback: app_dial reports ``DialEnd`` ``CANCEL``, the customer
    channel's ``Hangup`` and the agent channel's ``Hangup`` → ``CallbackUnanswered("agent-ended")``."""
    be, recorder = backend
    peer.callback_outcome = "ring"
    ended_original_call(peer, be, recorder)
    be.call_back(CALL, NUMBER, AgentEndpoint(8, "pjsip:agent08"), ring_seconds=10, customer_ring_seconds=20)
    assert wait_for(lambda: recorder.of(AgentAnswered))
    call = be.call(CALL)
    assert call is not None
    assert wait_for(lambda: call.callback is not None and call.callback.state == "dialling")
    agent = {"Channel": call.agent_channel, "Uniqueid": call.agent_uniqueid}
    customer = {"Channel": call.channel, "Uniqueid": call.uniqueid}
    peer.emit({"Event": "DialEnd", **agent, "DestChannel": call.channel, "DestUniqueid": call.uniqueid,
               "DialStatus": "CANCEL"})
    peer.emit({"Event": "Hangup", **customer, "Cause": "16", "Cause-txt": "Normal Clearing"})
    peer.emit({"Event": "Hangup", **agent, "Cause": "16", "Cause-txt": "Normal Clearing"})
    assert wait_for(lambda: recorder.of(CallbackUnanswered))
    time.sleep(0.2)
    assert recorder.summary() == [("AgentAnswered", CALL, 8, None), ("CallbackUnanswered", CALL, 8, "agent-ended")]
    assert not peer.actions_named("Hangup")


def test_reason_mapping() -> None:
    """Q.850 causes first when specific (17 busy, 18/19 no answer, 21 rejected), else ``DialStatus``,
    else ``failed``."""
    assert [callback_reason(c, s) for c, s in [("17", ""), ("18", ""), ("19", "NOANSWER"), ("21", "NOANSWER"),
                                               ("16", "NOANSWER"), ("16", "BUSY"), ("34", "CONGESTION"),
                                               ("", "CHANUNAVAIL"), ("", "CANCEL"), ("", "")]] == [
        "busy", "no-answer", "no-answer", "rejected", "no-answer", "busy", "failed", "failed", "agent-ended",
        "failed"]


@pytest.mark.parametrize("agent_free_first", [False, True])
def test_dispatcher_dials_an_ivr_callback_through_asterisk(demo_settings: Settings, agent_free_first: bool) -> None:
    """End to end with the real IVR (shipped flow over FastAGI, played by ``tests/agi_peer.py``), the real
    dispatcher and router on the demo database, and the AMI peer: a known caller chooses "call me back"
    (menu key 9 at ``GET DATA``), hears the goodbye (``STREAM FILE``) and the AGI hangs up. When a general
    agent is available the dispatcher reserves them and the backend ``Originate``s them into
    ``callcentre-callback`` with the caller's own number as ``CALLCENTRE_CALLBACK_NUMBER`` and
    ``routing.callback_ring_seconds``; the peer plays the answered ``Dial``, the call is answered with the
    agent on it; the customer's ``Hangup`` ends it as a callback, the agent in wrap-up. With the agent
    free before the choice, the dispatcher asks for the callback while the caller still hears the
    goodbye (in the AGI's own thread): the agent is rung only after that leg's ``CallHungUp``."""
    from sqlalchemy import select, update

    from callcentre.bootstrap import build_platform
    from callcentre.db.models import Agent, Call, QueueEntry
    from callcentre.demo_data import demo_customer
    from tests.agi_peer import AgiCaller, agi_environment

    with AmiPeer() as peer:
        settings = demo_settings.replace("asterisk", ami_host="127.0.0.1", ami_port=peer.port,
                                         ami_username=peer.username, ami_secret=peer.secret, ping_interval=0.5)
        be = AsteriskBackend(settings.asterisk, agi_port=0, agi_idle_seconds=10, action_timeout=3)
        platform = build_platform(settings, be)
        recorder = Recorder(platform.bus)
        platform.start()
        try:
            assert be.link is not None and be.link.wait_linked(5)
            sessions = platform.session_factory
            with sessions() as s:
                s.execute(update(Agent).values(state="logged_out"))
                agent = s.scalar(select(Agent).where(Agent.login == "agent01"))
                assert agent is not None
                agent.sip_contact = "sip:agent01@pbx.example.test"
                agent_id = agent.id
                s.commit()
            if agent_free_first:
                _make_available(sessions, platform, agent_id)
            phone = demo_customer(1)["phone"]
            env = agi_environment(uniqueid="1700009100.1", caller=phone)
            peer.emit({"Event": "Newchannel", "Channel": env["agi_channel"], "ChannelState": "6",
                       "ChannelStateDesc": "Up", "Uniqueid": env["agi_uniqueid"], "Linkedid": env["agi_uniqueid"],
                       "Context": "callcentre-in", "Exten": "1000"})
            caller = AgiCaller(be.agi.address[1], env, ["9"])
            # When the Originate reaches the PBX, has the caller's AGI already been told to HANGUP?
            goodbye_over_at_originate: list[bool] = []
            plain_originate = peer._originate

            def watched_originate(conn: Any, action: dict[str, str]) -> None:
                goodbye_over_at_originate.append("HANGUP" in caller.commands)
                plain_originate(conn, action)

            peer._originate = watched_originate  # type: ignore[method-assign]
            caller.start()
            assert caller.wait(10) and caller.error is None
            call_id = caller.variables["CALLCENTRE_CALL_ID"]
            assert caller.played[-1] == "callcentre/callback_ok" and "HANGUP" in caller.commands
            assert wait_for(lambda: recorder.of(CallHungUp))
            if not agent_free_first:
                with sessions() as s:
                    entry = s.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
                    assert entry is not None and entry.callback_number == phone and entry.status == "waiting"
                assert not peer.actions_named("Originate")
                _make_available(sessions, platform, agent_id)
            assert wait_for(lambda: recorder.of(CallbackAnswered))
            assert goodbye_over_at_originate == [True]
            (originate,) = peer.actions_named("Originate")
            assert originate["Channel"] == "PJSIP/agent01" and originate["Context"] == "callcentre-callback"
            assert originate["Timeout"] == str(int(settings.routing.ring_seconds * 1000))
            dialled = variables(originate)
            assert dialled["CALLCENTRE_CALLBACK_NUMBER"] == phone
            assert dialled["CALLCENTRE_CALLBACK_RING"] == str(round(settings.routing.callback_ring_seconds))
            assert wait_for(lambda: _agent_state(sessions, agent_id) == "on_call")
            with sessions() as s:
                call = s.get(Call, call_id)
                assert call is not None and call.answered_at is not None

            live = be.call(call_id)
            assert live is not None
            peer.emit({"Event": "Hangup", "Channel": live.channel, "Uniqueid": live.uniqueid, "Cause": "16",
                       "Cause-txt": "Normal Clearing"})
            # The recorder subscribed after the platform's services: wait for its copy too.
            assert wait_for(lambda: len(recorder.of(CallHungUp)) == 2)
            assert wait_for(lambda: _agent_state(sessions, agent_id) == "wrap_up")
            with sessions() as s:
                call = s.get(Call, call_id)
                assert call is not None and call.outcome == "callback"
                entry = s.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
                assert entry is not None and entry.status == "done"
            kinds = [e[0] for e in recorder.summary()]
            assert kinds == ["CallHungUp", "AgentAnswered", "CallbackAnswered", "CallHungUp"]
        finally:
            platform.stop()


def _make_available(sessions: Any, platform: Any, agent_id: int) -> None:
    from sqlalchemy import update

    from callcentre.db.models import Agent
    from callcentre.domain.events import AgentStateChanged

    with sessions() as s:
        s.execute(update(Agent).where(Agent.id == agent_id).values(state="available"))
        s.commit()
    platform.bus.publish(AgentStateChanged(agent_id, "available"))


def _agent_state(sessions: Any, agent_id: int) -> str:
    from callcentre.db.models import Agent

    with sessions() as s:
        agent = s.get(Agent, agent_id)
        return str(agent.state) if agent is not None else ""
