"""AMI link and Asterisk backend against the loopback AMI peer (``tests/ami_peer.py``).

No Asterisk can run here (no Debian 12 package), so every test drives the peer, which speaks the
Manager protocol exactly as the Asterisk documentation describes it; each docstring names the
documented behaviour reproduced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from asterisk.ami import AMIClient, SimpleAction

from callcentre.bus import EventBus
from callcentre.domain.events import AgentAnswered, AgentNoAnswer, CallHungUp, DigitsReceived
from callcentre.settings import AsteriskSettings
from telephony.ami_link import AmiError, AmiLink
from telephony.asterisk import AsteriskBackend, dial_string
from telephony.base import AgentEndpoint, TelephonyBackend
from tests.ami_peer import AmiPeer, PeerChannel, linked_backend


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def peer() -> Iterator[AmiPeer]:
    with AmiPeer() as p:
        yield p


@pytest.fixture
def link_events(peer: AmiPeer) -> Iterator[tuple[AmiLink, list]]:
    events: list = []
    link = AmiLink("127.0.0.1", peer.port, peer.username, peer.secret, on_event=events.append,
                   ping_interval=0.5, action_timeout=3.0)
    link.start()
    assert link.wait_linked(5)
    yield link, events
    link.stop()


class Recorder:
    def __init__(self, bus: EventBus) -> None:
        self.events: list = []
        for kind in (CallHungUp, DigitsReceived, AgentAnswered, AgentNoAnswer):
            bus.subscribe(kind, self.events.append)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
def backend(peer: AmiPeer) -> Iterator[tuple[AsteriskBackend, Recorder]]:
    bus = EventBus()
    recorder = Recorder(bus)
    with linked_backend(peer, bus) as be:
        yield be, recorder


def test_banner_login_and_ping_keepalive(peer: AmiPeer, link_events: tuple[AmiLink, list]) -> None:
    """Documented: the server greets with ``Asterisk Call Manager/x.y.z``; ``Login`` with Username and
    Secret is answered ``Success``/``Authentication accepted`` then ``FullyBooted``; ``Ping`` → ``Pong``."""
    link, events = link_events
    login = peer.actions_named("Login")[0]
    assert login["Username"] == peer.username and login["ActionID"]
    assert wait_for(lambda: any(e.name == "FullyBooted" for e in events))
    assert link.request("Ping").keys["Ping"] == "Pong"
    assert wait_for(lambda: len(peer.actions_named("Ping")) >= 3, 3), "keepalive pings every ping_interval"


def test_wrong_secret_is_refused_and_retried_with_backoff(peer: AmiPeer) -> None:
    """Documented: a bad secret gets ``Response: Error`` / ``Authentication failed`` and the connection
    closes. The link must keep retrying with growing delays and never report itself linked."""
    link = AmiLink("127.0.0.1", peer.port, peer.username, "wrong", on_event=lambda e: None,
                   backoff_initial=0.05, backoff_max=0.4, action_timeout=0.3)
    link.start()
    try:
        assert not link.wait_linked(1.0)
        attempts = len(peer.actions_named("Login"))
        assert 3 <= attempts <= 8, attempts  # 0.05+0.1+0.2+0.4+0.4… within 1 s
        assert "Authentication failed" in link.last_error
        with pytest.raises(AmiError):
            link.request("Ping")
    finally:
        link.stop()


def test_responses_correlated_by_action_id_out_of_order(peer: AmiPeer, link_events: tuple[AmiLink, list]) -> None:
    """Documented: every response echoes the ``ActionID`` of its action, and responses may be
    interleaved with events. The peer answers ``Ping`` late, so the later ``Hangup`` is answered first;
    each caller must still get its own answer."""
    link, events = link_events
    peer.delay["Ping"] = 0.4
    slow = link.send("Ping")
    fast = link.send("Hangup", Channel="PJSIP/nobody-1")
    peer.emit({"Event": "Newchannel", "Channel": "PJSIP/x-1", "Uniqueid": "9.1"})
    fast_response = fast.result(2)
    assert fast_response is not None and not slow.done(), "the fast answer came first"
    assert fast_response.keys["Message"] == "No such channel"
    slow_response = slow.result(2)
    assert slow_response is not None and slow_response.keys["Ping"] == "Pong"
    assert slow_response.keys["ActionID"] == slow.action_id != fast.action_id == fast_response.keys["ActionID"]
    assert wait_for(lambda: any(e.name == "Newchannel" for e in events))


def test_event_list_is_collected_not_dispatched(peer: AmiPeer, link_events: tuple[AmiLink, list]) -> None:
    """Documented: ``CoreShowChannels`` answers ``Success`` with ``EventList: start``, then one
    ``CoreShowChannel`` per channel carrying the ActionID, then ``CoreShowChannelsComplete`` with
    ``EventList: Complete`` and ``ListItems``."""
    link, events = link_events
    for n in range(3):
        peer.add_channel(PeerChannel(f"PJSIP/t-{n}", f"17.{n}", f"17.{n}"))
    listed = link.collect("CoreShowChannels")
    assert sorted(e.keys["Uniqueid"] for e in listed) == ["17.0", "17.1", "17.2"]
    assert all(e.name == "CoreShowChannel" for e in listed)
    time.sleep(0.1)
    assert not [e for e in events if e.name.startswith("CoreShowChannel")]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:notifyAll:DeprecationWarning")
def test_no_event_lost_after_idle_while_stock_client_loses_it(peer: AmiPeer) -> None:
    """Documented defect of asterisk-ami 0.1.7 (DESIGN.md §5): its ``timeout`` (default 3 s) is also the
    socket read timeout, so after 3 idle seconds the reader thread dies and later events are lost.
    After ≥ 5 s of silence (keepalive off, so nothing at all crosses the link) our link still gets the event."""
    stock_events: list = []
    stock = AMIClient(address="127.0.0.1", port=peer.port)  # timeout=3 default
    stock.add_event_listener(lambda event, **kw: stock_events.append(event))
    assert not stock.login(username=peer.username, secret=peer.secret).response.is_error()

    ours: list = []
    link = AmiLink("127.0.0.1", peer.port, peer.username, peer.secret, on_event=ours.append,
                   ping_interval=3600)
    link.start()
    try:
        assert link.wait_linked(5)
        time.sleep(5.5)
        peer.emit({"Event": "Newchannel", "Channel": "PJSIP/late-1", "Uniqueid": "55.1"})
        assert wait_for(lambda: any(e.name == "Newchannel" for e in ours), 2)
        time.sleep(0.2)
        assert not any(e.name == "Newchannel" for e in stock_events), "the stock client should have lost it"
        assert link.stats.disconnects == 0
    finally:
        link.stop()
        stock.disconnect()


def test_replayed_call_becomes_domain_events(peer: AmiPeer, backend: tuple[AsteriskBackend, Recorder]) -> None:
    """Documented events ``Newchannel``/``Newstate``/``VarSet``/``DTMFEnd``/``Hangup`` of one inbound call
    (fixture ``inbound_call.txt``): the key pressed on hold becomes ``DigitsReceived`` (only DTMFEnd,
    not DTMFBegin), the hang-up ``CallHungUp(by="caller")`` with the documented ``Cause-txt``."""
    _be, recorder = backend
    peer.replay("inbound_call.txt")
    assert wait_for(lambda: recorder.of(CallHungUp))
    assert [e.digits for e in recorder.of(DigitsReceived)] == ["1"]
    hung = recorder.of(CallHungUp)
    assert [(e.call_id, e.by, e.cause) for e in hung] == [("call-fixture-inbound", "caller", "Normal Clearing")]


def test_link_dropped_mid_call_and_restored(peer: AmiPeer, backend: tuple[AsteriskBackend, Recorder]) -> None:
    """Documented: Asterisk does not replay events to a manager that reconnects. Two calls are up; the
    manager connection drops; while it is down call A hangs up (its ``Hangup`` event goes nowhere) and
    an action is issued. After the link returns: the missed hang-up is recovered from
    ``CoreShowChannels`` exactly once, call B is untouched, the pending action goes out after the
    reconnect with its own ``ActionID`` and answer, and events after the restore flow again."""
    be, recorder = backend
    assert be.link is not None
    peer.replay("call_setup.txt")
    assert wait_for(lambda: be.call("call-fixture-a") is not None and be.call("call-fixture-b") is not None)

    peer.pause()
    peer.drop_connections()
    assert wait_for(lambda: not be.link.linked, 2)
    peer.emit({"Event": "Hangup", "Channel": "PJSIP/trunk-00000011", "Uniqueid": "1700000011.1",
               "Cause": "16", "Cause-txt": "Normal Clearing"})  # nobody connected: lost, as on Asterisk
    result: list = []
    worker = threading.Thread(target=lambda: result.append(be.link.request("Redirect",
                              Channel="PJSIP/trunk-00000012", Context="callcentre-hold", Exten="s", Priority="1")))
    worker.start()
    time.sleep(0.5)
    assert not result, "the action waits for the link"
    peer.resume()
    worker.join(5)
    assert result and result[0].keys["Message"] == "Redirect successful"
    redirect = peer.actions_named("Redirect")[-1]
    assert result[0].keys["ActionID"] == redirect["ActionID"]
    assert wait_for(lambda: recorder.of(CallHungUp))
    time.sleep(0.2)
    assert [(e.call_id, e.by) for e in recorder.of(CallHungUp)] == [("call-fixture-a", "caller")]
    assert be.link.stats.logins == 2

    peer.emit({"Event": "Hangup", "Channel": "PJSIP/trunk-00000012", "Uniqueid": "1700000012.1",
               "Cause": "16", "Cause-txt": "Normal Clearing"})
    assert wait_for(lambda: len(recorder.of(CallHungUp)) == 2)
    assert recorder.of(CallHungUp)[1].call_id == "call-fixture-b"


def test_connect_agent_originates_and_bridges(peer: AmiPeer, backend: tuple[AsteriskBackend, Recorder]) -> None:
    """Documented: ``Originate`` with ``Async: true`` answers ``Originate successfully queued`` and later
    ``OriginateResponse`` (same ActionID, ``Response: Success``, ``Reason: 4``). Then ``Bridge`` joins
    caller and agent, and ``AgentAnswered`` is published; the agent's ``Hangup`` → ``CallHungUp(by=agent)``."""
    be, recorder = backend
    peer.replay("call_setup.txt")
    assert wait_for(lambda: be.call("call-fixture-a") is not None)
    be.connect_agent("call-fixture-a", AgentEndpoint(7, "sip:agent07@127.0.0.1:5070"), ring_seconds=10)
    assert wait_for(lambda: recorder.of(AgentAnswered))
    originate = peer.actions_named("Originate")[0]
    assert originate["Channel"] == "PJSIP/agent07" and originate["Async"] == "true"
    assert originate["Timeout"] == "10000" and "CALLCENTRE_CALL_ID=call-fixture-a" in originate["Variable"]
    bridge = peer.actions_named("Bridge")[0]
    call = be.call("call-fixture-a")
    assert call is not None and bridge["Channel1"] == "PJSIP/trunk-00000011" == call.channel
    assert bridge["Channel2"] == call.agent_channel
    assert recorder.of(AgentAnswered)[0].agent_id == 7
    peer.emit({"Event": "Hangup", "Channel": call.agent_channel, "Uniqueid": call.agent_uniqueid,
               "Cause": "16", "Cause-txt": "Normal Clearing"})
    assert wait_for(lambda: recorder.of(CallHungUp))
    assert recorder.of(CallHungUp)[0].by == "agent"


def test_agent_no_answer(peer: AmiPeer, backend: tuple[AsteriskBackend, Recorder]) -> None:
    """Documented: ``OriginateResponse`` with ``Response: Failure`` and ``Reason: 3`` (no answer)."""
    be, recorder = backend
    peer.originate_outcome = "noanswer"
    peer.replay("call_setup.txt")
    assert wait_for(lambda: be.call("call-fixture-b") is not None)
    be.connect_agent("call-fixture-b", AgentEndpoint(3, "pjsip:agent03"), ring_seconds=5)
    assert wait_for(lambda: recorder.of(AgentNoAnswer))
    assert recorder.of(AgentNoAnswer)[0].agent_id == 3 and not recorder.of(AgentAnswered)
    assert not peer.actions_named("Bridge")


def test_call_control_actions(peer: AmiPeer, backend: tuple[AsteriskBackend, Recorder]) -> None:
    """Documented actions and their keys: ``MixMonitor`` (Channel, File, Options), ``PauseMixMonitor``
    (State, Direction), ``StopMixMonitor``, ``Redirect`` (Context/Exten/Priority), ``BlindTransfer``,
    ``Atxfer`` (on the agent channel), ``Hangup``; a platform hang-up is reported ``by="platform"``."""
    be, recorder = backend
    peer.replay("call_setup.txt")
    assert wait_for(lambda: be.call("call-fixture-a") is not None)
    be.connect_agent("call-fixture-a", AgentEndpoint(1, "PJSIP/agent01"), ring_seconds=5)
    assert wait_for(lambda: recorder.of(AgentAnswered))
    be.start_recording("call-fixture-a", "call-fixture-a.wav")
    be.pause_recording("call-fixture-a", True)
    be.pause_recording("call-fixture-a", False)
    be.hold("call-fixture-a", True)
    be.hold("call-fixture-a", False)
    be.attended_transfer("call-fixture-a", "2001")
    be.blind_transfer("call-fixture-a", "2002")
    be.stop_recording("call-fixture-a")
    be.hangup("call-fixture-a")
    assert wait_for(lambda: recorder.of(CallHungUp))
    names = [a["Action"] for a in peer.actions if a["Action"] not in {"Ping", "Login", "CoreShowChannels"}]
    assert names == ["Originate", "Bridge", "MixMonitor", "PauseMixMonitor", "PauseMixMonitor", "Redirect",
                     "Bridge", "Atxfer", "BlindTransfer", "StopMixMonitor", "Hangup"]
    mix = peer.actions_named("MixMonitor")[0]
    assert mix["File"].endswith("/call-fixture-a.wav") and "D" in mix["Options"]
    assert [a["State"] for a in peer.actions_named("PauseMixMonitor")] == ["1", "0"]
    call = be.call("call-fixture-a")
    assert call is not None and peer.actions_named("Atxfer")[0]["Channel"] == call.agent_channel
    assert recorder.of(CallHungUp)[0].by == "platform"


def test_backend_satisfies_protocol_and_rejects_bad_contacts(peer: AmiPeer) -> None:
    """The backend implements ``TelephonyBackend``; contacts it cannot dial get a clear ValueError."""
    settings = AsteriskSettings(ami_port=peer.port, agi_port=0)
    be = AsteriskBackend(settings, enable_ami=False)
    try:
        assert isinstance(be, TelephonyBackend)
    finally:
        be.agi.stop()
    assert dial_string("sip:agent01@10.0.0.1:5060") == "PJSIP/agent01"
    assert dial_string("SIP/legacy") == "SIP/legacy"
    with pytest.raises(ValueError, match="browser"):
        dial_string("browser")


def test_garbage_banner_is_a_disconnect_not_a_crash() -> None:
    """A peer that is not an AMI server (no ``Asterisk Call Manager/`` banner) is treated as a failed
    login and retried; the process keeps running."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    link = AmiLink("127.0.0.1", port, "u", "p", on_event=lambda e: None, connect_timeout=0.5,
                   backoff_initial=0.05, backoff_max=0.1)
    link.start()
    try:
        assert not link.wait_linked(0.8)
        assert link.last_error
    finally:
        link.stop()
        stop.set()
        thread.join(1)
        server.close()


def test_stock_send_action_api_still_works(peer: AmiPeer, link_events: tuple[AmiLink, list]) -> None:
    """The patched client keeps the library's ``send_action(...).response`` API for callers written against it."""
    link, _ = link_events
    client = link._client
    assert client is not None
    response = client.send_action(SimpleAction("Ping")).response
    assert response is not None and response.keys["Ping"] == "Pong"


def test_dial_and_bridge_events_settle_the_agent_leg(peer: AmiPeer, backend: tuple[AsteriskBackend, Recorder]) -> None:
    """Documented ``DialBegin``/``DialEnd`` (``DestUniqueid``, ``DialStatus: NOANSWER``) for the agent
    channel tagged by ``VarSet CALLCENTRE_CALL_ID`` → ``AgentNoAnswer`` (its ``Hangup`` then ends no
    conversation: no ``CallHungUp``); a documented ``BridgeEnter`` of the agent channel →
    ``AgentAnswered``. Replayed from ``tests/fixtures/ami/agent_dial_noanswer.txt`` and
    ``agent_bridge_enter.txt``."""
    be, recorder = backend
    peer.originate_outcome = "none"
    peer.replay("call_setup.txt")
    assert wait_for(lambda: be.call("call-fixture-b") is not None)
    be.connect_agent("call-fixture-a", AgentEndpoint(5, "pjsip:agent05"), ring_seconds=30)
    be.connect_agent("call-fixture-b", AgentEndpoint(6, "pjsip:agent06"), ring_seconds=30)
    peer.replay("agent_dial_noanswer.txt")
    peer.replay("agent_bridge_enter.txt")
    assert wait_for(lambda: recorder.of(AgentNoAnswer) and recorder.of(AgentAnswered))
    assert [(e.call_id, e.agent_id) for e in recorder.of(AgentNoAnswer)] == [("call-fixture-a", 5)]
    assert [(e.call_id, e.agent_id) for e in recorder.of(AgentAnswered)] == [("call-fixture-b", 6)]
    time.sleep(0.1)
    assert not recorder.of(CallHungUp), "a leg that rang out is not the agent ending a conversation"


def test_announcement_to_a_queued_caller_returns_them_to_hold(peer: AmiPeer,
                                                              backend: tuple[AsteriskBackend, Recorder]) -> None:
    """A caller on hold (AGI ended with ``CALLCENTRE_NEXT=queue``) gets an announcement: the backend
    ``Redirect``s the channel to ``resume`` in the IVR context (documented Redirect keys Channel/
    Context/Exten/Priority); Asterisk runs the FastAGI again (played by ``tests/agi_peer.py``), the
    announcement plays as ``GET DATA``, and with no key pressed and nothing more to do the AGI sets
    ``CALLCENTRE_NEXT=queue`` again (back to music on hold) instead of hanging up. The IVR's decision
    to enqueue is scripted here (a bus handler), the backend and both protocols are real."""
    from callcentre.domain.context import CallContext
    from callcentre.domain.events import CallArrived
    from ivr.actions import Enqueue, Gather, Prompt
    from tests.agi_peer import AgiCaller, agi_environment

    be, _ = backend
    assert be._bus is not None
    be._bus.subscribe(CallArrived, lambda e: be.perform(e.call_id, Enqueue(
        queue="general", required_skills=(), priority=0, language="en", context=CallContext(e.call_id))))
    env = agi_environment(uniqueid="1700000200.1", caller="+15550100001")
    peer.emit({"Event": "Newchannel", "Channel": env["agi_channel"], "Uniqueid": env["agi_uniqueid"],
               "Linkedid": env["agi_uniqueid"], "ChannelState": "6", "ChannelStateDesc": "Up"})
    first = AgiCaller(be.agi.address[1], env, []).start()
    assert first.wait() and first.variables["CALLCENTRE_NEXT"] == "queue"
    call_id = first.variables["CALLCENTRE_CALL_ID"]

    be.perform(call_id, Gather(prompts=(Prompt("queue_next", "You are next in line."),), timeout_seconds=2))
    redirect = peer.actions_named("Redirect")[-1]
    assert (redirect["Channel"], redirect["Context"], redirect["Exten"]) == (env["agi_channel"], "callcentre-in",
                                                                              "resume")
    again = AgiCaller(be.agi.address[1], {**env, "agi_extension": "resume"}, [None]).start()
    assert again.wait() and again.error is None
    assert again.played == ["callcentre/queue_next"]
    assert again.variables.get("CALLCENTRE_NEXT") == "queue" and "HANGUP" not in again.commands


def test_sensitive_input_pauses_the_recording(peer: AmiPeer, backend: tuple[AsteriskBackend, Recorder]) -> None:
    """A ``Gather`` marked sensitive (a PIN) on a recorded call: documented ``PauseMixMonitor`` with
    ``State: 1`` before the ``GET DATA`` reaches Asterisk, ``State: 0`` after the digits came back, so
    the PIN's tones are not in the recording. The IVR's steps are scripted (bus handlers); the
    backend, the AMI peer and the FastAGI exchange are real."""
    from callcentre.domain.events import CallArrived
    from ivr.actions import Gather, Hangup, Prompt
    from tests.agi_peer import AgiCaller, agi_environment

    be, recorder = backend
    assert be._bus is not None
    env = agi_environment(uniqueid="1700000300.1", caller="+15550100001")
    peer.emit({"Event": "Newchannel", "Channel": env["agi_channel"], "Uniqueid": env["agi_uniqueid"],
               "Linkedid": env["agi_uniqueid"], "ChannelState": "6", "ChannelStateDesc": "Up"})

    def arrived(event: CallArrived) -> None:
        be.start_recording(event.call_id, f"{event.call_id}.wav")
        be.perform(event.call_id, Gather(prompts=(Prompt("enter_pin", "Your PIN"),), max_digits=4, min_digits=4,
                                         sensitive=True))

    be._bus.subscribe(CallArrived, arrived)
    be._bus.subscribe(DigitsReceived, lambda e: be.perform(e.call_id, Hangup(reason="done")))
    paused_states: list[list[str]] = []
    caller = AgiCaller(be.agi.address[1], env, ["1234"])
    caller.on_get_data = lambda: paused_states.append([a["State"] for a in peer.actions_named("PauseMixMonitor")])
    caller.start()
    assert caller.wait() and caller.error is None
    assert paused_states == [["1"]], "paused before the caller was asked for the PIN"
    assert [a["State"] for a in peer.actions_named("PauseMixMonitor")] == ["1", "0"]
    assert [e.digits for e in recorder.of(DigitsReceived)] == ["1234"]


def test_malformed_traffic_is_skipped_not_fatal(peer: AmiPeer, link_events: tuple[AmiLink, list]) -> None:
    """Blocks that are neither a ``Response:`` nor an ``Event:`` message, lines without ``Key: Value``,
    and undecodable bytes are skipped; the link stays up and the next well-formed event arrives."""
    link, events = link_events
    peer.send_raw(b"Garbage without a header\r\nnonsense\r\n\r\n")
    peer.send_raw(b"Event: Newstate\r\nno colon here\r\nUniqueid: 1.1\r\n\xff\xfe\r\n\r\n")
    peer.emit({"Event": "Newchannel", "Channel": "PJSIP/ok-1", "Uniqueid": "2.2"})
    assert wait_for(lambda: any(e.name == "Newchannel" for e in events))
    assert any(e.name == "Newstate" and e.keys.get("Uniqueid") == "1.1" for e in events)
    assert link.linked and link.stats.disconnects == 0
    assert link.request("Ping").keys["Ping"] == "Pong"
