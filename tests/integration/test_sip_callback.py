"""Callbacks on the embedded SIP endpoint: the agent is rung first, then the customer is dialled and bridged.

Real peers on loopback: the agent is a headless baresip (it answers and "talks" a 700 Hz tone), the
customer is a sipp UAS (``tests/fixtures/sipp/callback_uas*.xml``: answers and talks the shipped G.711
speech pcap into our RTP, sends our audio to the test's RTP sink; or answers 486; or only rings), or a
baresip registered to kamailio when kamailio is the ``outbound_proxy``.
"""

from __future__ import annotations

import audioop
import collections
import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from callcentre.bus import EventBus
from callcentre.domain.events import (
    AgentAnswered,
    AgentNoAnswer,
    CallArrived,
    CallbackAnswered,
    CallbackUnanswered,
    CallHungUp,
    Event,
)
from callcentre.settings import Settings
from telephony.base import AgentEndpoint, can_call_back
from tests.baresip import Baresip
from tests.integration.sip_fixtures import EventLog, sip_settings_fixture, workdir  # noqa: F401
from tests.integration.test_sip_consult import ToneAgent, tone_share
from tests.integration.test_webrtc_gateway import peer_fixture  # noqa: F401  (fixture "peer": aiortc)
from tests.kamailio import start_kamailio
from tests.sipp import FIXTURES, RtpSink, SippRun, free_udp_port

pytestmark = [pytest.mark.peer, pytest.mark.slow]

NUMBER = "5550100"
ORIGINAL_CALL = "call-original-0001"
"""The call id of the caller's first call, already ended (the backend has never seen it)."""


@dataclass
class Endpoint:
    backend: Any
    bus: EventBus
    log: EventLog
    audio: collections.Counter[tuple[str, str]]
    """Loud frames the backend handed to ``audio_sink`` per (call id, "caller"|"agent") — what recording gets."""


@pytest.fixture(name="endpoint_factory")
def endpoint_factory_fixture(sip_settings: Settings) -> Iterator[Any]:
    started: list[Any] = []

    def start(outbound_proxy: str = "", **sip: Any) -> Endpoint:
        from callcentre.bootstrap import prompts_dir
        from telephony.sip import SipBackend

        settings = sip_settings.replace("sip", outbound_proxy=outbound_proxy, **sip)
        backend = SipBackend(settings.sip, prompts_dir(settings))
        audio: collections.Counter[tuple[str, str]] = collections.Counter()
        lock = threading.Lock()

        def sink(call_id: str, leg: str, pcm: bytes) -> None:
            if audioop.rms(pcm, 2) > 300:
                with lock:
                    audio[(call_id, leg)] += 1

        backend.audio_sink = sink
        bus = EventBus()
        log = EventLog()
        bus.subscribe(Event, log)
        backend.start(bus)
        started.append(backend)
        return Endpoint(backend, bus, log, audio)

    yield start
    for backend in started:
        backend.stop()


def start_agent(tmp_path: Path, user: str = "agent01", cls: type[Baresip] = Baresip, **options: Any) -> Baresip:
    """A baresip agent; retried because a probed free port can be taken by a parallel run."""
    for attempt in range(3):
        agent = cls(workdir(tmp_path, f"{user}-{attempt}"), user=user, **options)
        try:
            return agent.start()
        except RuntimeError:
            agent.stop()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def customer(
    tmp_path: Path, name: str, ring_ms: int = 300, auth: str = "", status: str = "", **variables: str
) -> SippRun:
    """A sipp UAS customer on a free port (the callback's outbound proxy points at it)."""
    work = workdir(tmp_path, f"customer-{name}")
    text = (FIXTURES / name).read_text().replace("STATUS_LINE", status)
    text = text.replace("<!--RING-->", f'<pause milliseconds="{ring_ms}"/>')
    text = text.replace("<!--AUTH-->", auth)
    scenario = work / name
    scenario.write_text(text)
    port = free_udp_port()
    return SippRun(scenario, f"127.0.0.1:{port + 2}", work, variables=variables, local_port=port, timeout_s=30)


def ringback_frames(agent: Baresip) -> int:
    """20 ms frames of the 425 Hz ringing tone in the agent phone's dump of what it decoded."""
    dumps = sorted((agent.workdir / "dump").glob("dump-*-dec.wav"))
    assert dumps, f"baresip {agent.user} dumped no received audio"
    data = dumps[-1].read_bytes()
    pcm = data[data.index(b"data") + 8 :]
    frames = (pcm[i : i + 320] for i in range(0, len(pcm) - 319, 320))
    return sum(1 for f in frames if audioop.rms(f, 2) > 300 and tone_share(f, 425.0) > 0.5)


def proxy_of(run: SippRun) -> str:
    return f"127.0.0.1:{run.local_port}"


def names(log: EventLog) -> list[str]:
    return [type(e).__name__ for e in log.events]


def test_callback_rings_agent_then_customer_bridges_both_ways_and_ends_on_agent_bye(
    endpoint_factory: Any, tmp_path: Path
) -> None:
    sink = RtpSink().start()
    run = customer(tmp_path, "callback_uas.xml", ring_ms=1500, sinkport=str(sink.port))
    ep = endpoint_factory(outbound_proxy=proxy_of(run))
    agent = start_agent(tmp_path, cls=ToneAgent)  # dumps what it hears (baresip sndfile)
    try:
        run.start()
        capable = can_call_back(ep.backend)  # (a plain bool: no type narrowing of the backend)
        assert capable
        ep.backend.call_back(ORIGINAL_CALL, NUMBER, AgentEndpoint(1, agent.contact), 10, 10)
        ep.log.wait_for(AgentAnswered, timeout=10)
        agent.wait_event("CALL_ESTABLISHED", timeout=5)
        call = ep.backend.calls[ORIGINAL_CALL]
        assert call.agent is not None and call.agent.leg.media is not None
        agent_media = call.agent.leg.media
        time.sleep(0.3)
        assert not call.answered  # the customer rings for 1.5 s, the agent hears ringback meanwhile

        answered = ep.log.wait_for(CallbackAnswered, timeout=10)
        assert answered.call_id == ORIGINAL_CALL and answered.agent_id == 1
        customer_media = call.leg.media
        assert customer_media is not None
        loud_before = sink.loud_frames
        time.sleep(2.5)
        # agent → customer: baresip's tone reaches the customer's RTP sink through our relay
        assert sink.loud_frames - loud_before > 30
        # customer → agent: sipp's speech pcap arrives on the customer leg and is relayed to the agent
        assert customer_media.stats.received_loud > 5 and customer_media.stats.relayed > 50
        # what the recording is fed: the customer on the "caller" channel, the agent on "agent"
        assert ep.audio[(ORIGINAL_CALL, "caller")] > 5 and ep.audio[(ORIGINAL_CALL, "agent")] > 5

        # hold works on a callback call: nothing relayed while held, music to the customer
        ep.backend.hold(ORIGINAL_CALL, True)
        time.sleep(0.3)
        relayed = agent_media.stats.relayed
        time.sleep(0.8)
        assert agent_media.stats.relayed == relayed
        ep.backend.hold(ORIGINAL_CALL, False)
        time.sleep(0.6)
        assert agent_media.stats.relayed > relayed

        agent.hangup()
        hung = ep.log.wait_for(CallHungUp, timeout=10)
        assert hung.call_id == ORIGINAL_CALL and hung.by == "agent"
        assert run.wait(15) == 0, run.errors()  # the customer got our BYE (2 s after the agent left)
    finally:
        run.stop()
        agent.stop()
        sink.stop()
    assert ringback_frames(agent) >= 25  # ≥ 0.5 s of 425 Hz in what the agent's phone decoded
    kinds = names(ep.log)
    assert kinds.index("AgentAnswered") < kinds.index("CallbackAnswered") < kinds.index("CallHungUp")
    assert not ep.log.of(CallbackUnanswered) and not ep.log.of(AgentNoAnswer)


@pytest.mark.parametrize(("status", "reason"), [("486 Busy Here", "busy"), ("603 Decline", "rejected"),
                                                ("503 Service Unavailable", "failed")])
def test_refused_callback_ends_the_agent_leg(
    endpoint_factory: Any, session_factory: Any, tmp_path: Path, status: str, reason: str
) -> None:
    from callcentre.db.models import Call, Recording
    from recordings.service import RecordingService

    run = customer(tmp_path, "callback_uas_busy.xml", status=status)
    ep = endpoint_factory(outbound_proxy=proxy_of(run))
    with session_factory() as s:
        s.add(Call(id=ORIGINAL_CALL, backend="sip", state="ended", outcome="callback"))
        s.commit()
    recordings = RecordingService(tmp_path / "recordings", session_factory, transcribe=False)
    recordings.subscribe(ep.bus)
    counting = ep.backend.audio_sink

    def both(call_id: str, leg: str, pcm: bytes) -> None:
        counting(call_id, leg, pcm)
        recordings.feed(call_id, leg, pcm)

    ep.backend.audio_sink = both
    agent = start_agent(tmp_path)
    try:
        run.start()
        ep.backend.call_back(ORIGINAL_CALL, NUMBER, AgentEndpoint(7, agent.contact), 10, 10)
        unanswered = ep.log.wait_for(CallbackUnanswered, timeout=10)
        assert (unanswered.call_id, unanswered.agent_id, unanswered.reason) == (ORIGINAL_CALL, 7, reason)
        agent.wait_event("CALL_CLOSED", timeout=5)  # the agent's answered leg got our BYE
        assert run.wait(10) == 0, run.errors()  # the final response was ACKed
    finally:
        run.stop()
        agent.stop()
    assert names(ep.log) == ["AgentAnswered", "CallbackUnanswered"]
    assert ORIGINAL_CALL not in ep.backend.calls
    # The recording the agent's answer started is closed, not left open, and discarded: the customer never
    # came on, so there is no conversation to keep or transcribe
    assert recordings.recorder(ORIGINAL_CALL) is None
    with session_factory() as s:
        assert s.query(Recording).filter_by(call_id=ORIGINAL_CALL).count() == 0
    assert not [p for p in (tmp_path / "recordings").rglob("*") if p.is_file()]


def test_callback_ringing_out_is_cancelled_as_no_answer(endpoint_factory: Any, tmp_path: Path) -> None:
    run = customer(tmp_path, "callback_uas_ring.xml")
    ep = endpoint_factory(outbound_proxy=proxy_of(run))
    agent = start_agent(tmp_path)
    try:
        run.start()
        started = time.monotonic()
        ep.backend.call_back(ORIGINAL_CALL, NUMBER, AgentEndpoint(2, agent.contact), 10, 2.0)
        unanswered = ep.log.wait_for(CallbackUnanswered, timeout=10)
        assert unanswered.reason == "no-answer" and time.monotonic() - started >= 2.0
        assert run.wait(10) == 0, run.errors()  # sipp got our CANCEL, and our ACK for its 487
        agent.wait_event("CALL_CLOSED", timeout=5)
    finally:
        run.stop()
        agent.stop()
    assert not ep.log.of(CallHungUp)


def test_agent_hanging_up_while_the_customer_rings_cancels_it(endpoint_factory: Any, tmp_path: Path) -> None:
    """The agent's phone sends BYE on ringback: they ended the attempt — CANCEL to the ringing customer
    (sipp requires it and our ACK for its 487), ``CallbackUnanswered("agent-ended")``, no ``CallHungUp``."""
    run = customer(tmp_path, "callback_uas_ring.xml")
    ep = endpoint_factory(outbound_proxy=proxy_of(run))
    agent = start_agent(tmp_path)
    try:
        run.start()
        ep.backend.call_back(ORIGINAL_CALL, NUMBER, AgentEndpoint(3, agent.contact), 10, 20)
        ep.log.wait_for(AgentAnswered, timeout=10)
        time.sleep(0.8)  # the customer's phone rings
        agent.hangup()
        ended = ep.log.wait_for(CallbackUnanswered, timeout=5)
        assert (ended.call_id, ended.agent_id, ended.reason) == (ORIGINAL_CALL, 3, "agent-ended")
        assert run.wait(10) == 0, run.errors()  # CANCEL reached the customer, its 487 was ACKed
    finally:
        run.stop()
        agent.stop()
    assert not ep.log.of(CallHungUp) and ORIGINAL_CALL not in ep.backend.calls


def test_platform_hangup_while_the_customer_rings_ends_the_attempt(endpoint_factory: Any, tmp_path: Path) -> None:
    """The console's hang-up during dialling is ``backend.hangup(call_id)``: CANCEL to the customer who
    sent 180 (sipp fails without it and without our ACK for its 487), our BYE to the agent's baresip
    (it reports CALL_CLOSED), ``CallbackUnanswered(reason="agent-ended")`` and never ``CallHungUp``."""
    run = customer(tmp_path, "callback_uas_ring.xml")
    ep = endpoint_factory(outbound_proxy=proxy_of(run))
    agent = start_agent(tmp_path)
    try:
        run.start()
        ep.backend.call_back(ORIGINAL_CALL, NUMBER, AgentEndpoint(4, agent.contact), 10, 20)
        ep.log.wait_for(AgentAnswered, timeout=10)
        time.sleep(0.8)  # the customer's phone rings (their 180 has arrived)
        started = time.monotonic()
        ep.backend.hangup(ORIGINAL_CALL)
        ended = ep.log.wait_for(CallbackUnanswered, timeout=5)
        assert (ended.call_id, ended.agent_id, ended.reason) == (ORIGINAL_CALL, 4, "agent-ended")
        agent.wait_event("CALL_CLOSED", timeout=5)  # our BYE on the agent's leg
        assert run.wait(10) == 0, run.errors()  # CANCEL seen, 200 + 487 sent, 487 ACKed
        assert time.monotonic() - started < 10  # not the 20 s customer ring time
        time.sleep(0.3)  # a stray CallHungUp would be published by now
    finally:
        run.stop()
        agent.stop()
    assert not ep.log.of(CallHungUp) and len(ep.log.of(CallbackUnanswered)) == 1
    assert ORIGINAL_CALL not in ep.backend.calls


def wait_until_bound(port: int, timeout: float = 5.0) -> bool:
    """Whether a process (sipp) holds 127.0.0.1:``port`` within ``timeout`` (our bind then fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return True
        time.sleep(0.02)
    return False


def test_platform_hangup_before_any_response_cancels_on_the_first_provisional(
    endpoint_factory: Any, tmp_path: Path
) -> None:
    """Hang-up before the customer's side answered anything: RFC 3261 §9.1 forbids a CANCEL before a
    provisional response, so the attempt ends at once (agent's leg BYE, ``CallbackUnanswered("agent-ended")``)
    and the CANCEL goes out when the late 180 arrives — sipp (pausing 1.5 s before its 180) still
    requires it, and our ACK for its 487."""
    work = workdir(tmp_path, "customer-late")
    text = (FIXTURES / "callback_uas_ring.xml").read_text()
    text = text.replace("</recv>\n  <send>", '</recv>\n  <pause milliseconds="1500"/>\n  <send>', 1)
    assert "<pause" in text
    scenario = work / "callback_uas_late_ring.xml"
    scenario.write_text(text)
    port = free_udp_port()
    run = SippRun(scenario, f"127.0.0.1:{port + 2}", work, local_port=port, timeout_s=30)
    ep = endpoint_factory(outbound_proxy=proxy_of(run))
    agent = start_agent(tmp_path)
    try:
        run.start()
        # The hang-up comes before Timer A's first retransmission: sipp must hear the FIRST INVITE.
        assert wait_until_bound(port), "sipp never bound its port"
        ep.backend.call_back(ORIGINAL_CALL, NUMBER, AgentEndpoint(5, agent.contact), 10, 20)
        ep.log.wait_for(AgentAnswered, timeout=10)
        time.sleep(0.3)  # our INVITE is out; the customer's side has not answered it yet
        ep.backend.hangup(ORIGINAL_CALL)
        ended = ep.log.wait_for(CallbackUnanswered, timeout=1)  # at once, not after the 180
        assert (ended.agent_id, ended.reason) == (5, "agent-ended")
        agent.wait_event("CALL_CLOSED", timeout=5)
        assert run.wait(15) == 0, run.errors()  # the late 180 got its CANCEL; 487 ACKed
    finally:
        run.stop()
        agent.stop()
    assert not ep.log.of(CallHungUp) and len(ep.log.of(CallbackUnanswered)) == 1


def test_callback_waits_until_the_callers_own_leg_has_ended(endpoint_factory: Any, tmp_path: Path) -> None:
    """An agent freed up while the caller who chose the callback still hears the goodbye: the agent is rung
    only after our BYE ended that leg."""
    from tests.sipp import render_scenario

    sink = RtpSink().start()
    busy = customer(tmp_path, "callback_uas_busy.xml", status="486 Busy Here")
    ep = endpoint_factory(outbound_proxy=proxy_of(busy))
    agent = start_agent(tmp_path)
    work = workdir(tmp_path, "caller")
    caller = SippRun(render_scenario("agent_call.xml", work), "{}:{}".format(*ep.backend.address), work,
                     variables={"sinkport": str(sink.port), "caller": "5550199"}, timeout_s=20)
    try:
        caller.start()
        call_id = ep.log.wait_for(CallArrived, timeout=10).call_id
        busy.start()
        ep.backend.call_back(call_id, NUMBER, AgentEndpoint(11, agent.contact), 10, 10)
        time.sleep(1.0)
        assert not ep.log.of(AgentAnswered) and not agent.has_event("CALL_INCOMING")
        ep.backend.hangup(call_id)  # the goodbye is over: our BYE to the caller
        assert caller.wait(10) == 0, caller.errors()
        unanswered = ep.log.wait_for(CallbackUnanswered, timeout=10)  # then: agent, customer busy
        assert (unanswered.call_id, unanswered.reason) == (call_id, "busy")
        assert busy.wait(10) == 0, busy.errors()
    finally:
        caller.stop()
        busy.stop()
        agent.stop()
        sink.stop()
    kinds = [type(e).__name__ for e in ep.log.events]
    assert kinds.index("CallHungUp") < kinds.index("AgentAnswered") < kinds.index("CallbackUnanswered")


def test_unreachable_customer_fails_and_an_unanswering_agent_is_never_bridged(
    endpoint_factory: Any, tmp_path: Path
) -> None:
    dead = free_udp_port()  # nobody listens: no response at all
    ep = endpoint_factory(outbound_proxy=f"127.0.0.1:{dead}")
    agent = start_agent(tmp_path)
    sleepy = start_agent(tmp_path, user="agent02", answermode="manual")
    try:
        ep.backend.customer_no_response_seconds = 1.5  # (8 s in production) well before the 30 s ring time
        ep.backend.call_back(ORIGINAL_CALL, NUMBER, AgentEndpoint(4, agent.contact), 10, 30)
        unanswered = ep.log.wait_for(CallbackUnanswered, timeout=10)
        assert unanswered.reason == "failed"
        agent.wait_event("CALL_CLOSED", timeout=5)

        # The next attempt: this agent does not answer → AgentNoAnswer only; the customer is never dialled.
        ep.backend.call_back("call-original-0002", NUMBER, AgentEndpoint(5, sleepy.contact), 1.0, 5)
        sleepy.wait_event("CALL_INCOMING", timeout=5)
        missed = ep.log.wait_for(AgentNoAnswer, timeout=5)
        assert missed.call_id == "call-original-0002" and missed.agent_id == 5
        sleepy.wait_event("CALL_CLOSED", timeout=5)  # our CANCEL
        time.sleep(0.3)
    finally:
        agent.stop()
        sleepy.stop()
    assert [type(e).__name__ for e in ep.log.events if e.call_id == "call-original-0002"] == ["AgentNoAnswer"]
    assert not ep.backend.calls


def test_without_an_outbound_proxy_direct_mode_fails_the_attempt(endpoint_factory: Any, tmp_path: Path) -> None:
    """Nowhere to send the customer's INVITE: the attempt still follows the contract (the router counts it)."""
    ep = endpoint_factory(outbound_proxy="")
    agent = start_agent(tmp_path)
    try:
        ep.backend.call_back(ORIGINAL_CALL, NUMBER, AgentEndpoint(6, agent.contact), 10, 10)
        unanswered = ep.log.wait_for(CallbackUnanswered, timeout=10)
        assert unanswered.reason == "failed" and names(ep.log) == ["AgentAnswered", "CallbackUnanswered"]
        agent.wait_event("CALL_CLOSED", timeout=5)
    finally:
        agent.stop()


class RawCustomer:
    """A customer's side written by hand on a UDP socket, to send what no real phone would."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]
        self.request = ""
        self.source: tuple[str, int] = ("127.0.0.1", 0)

    def receive(self, method: str) -> str:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            data, self.source = self.sock.recvfrom(65535)
            text = data.decode(errors="replace")
            if text.startswith(method + " "):
                if method == "INVITE":
                    self.request = text
                return text
        raise AssertionError(f"no {method} from the endpoint")

    def header(self, name: str) -> str:
        found = re.search(rf"^{name}:[ \t]*(.*?)\r$", self.request, re.M | re.I)
        return found.group(1) if found else ""

    def reply(self, status: str, *, skip: str = "", cseq: str = "", body: str = "") -> None:
        lines = [f"SIP/2.0 {status}"]
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            if name == skip:
                continue
            value = cseq if name == "CSeq" and cseq else self.header(name)
            lines.append(f"{name}: {value};tag=raw1" if name == "To" else f"{name}: {value}")
        lines += [f"Contact: <sip:customer@127.0.0.1:{self.port}>"]
        if body:
            lines += ["Content-Type: application/sdp"]
        lines += [f"Content-Length: {len(body)}", "", body]
        self.send("\r\n".join(lines).encode())

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.source)


def test_malformed_customer_responses_never_crash_the_endpoint(endpoint_factory: Any, tmp_path: Path) -> None:
    raw = RawCustomer()
    ep = endpoint_factory(outbound_proxy=f"127.0.0.1:{raw.port}")
    agent = start_agent(tmp_path)
    try:
        ep.backend.call_back(ORIGINAL_CALL, NUMBER, AgentEndpoint(10, agent.contact), 10, 10)
        raw.receive("INVITE")
        assert NUMBER in raw.request.split("\r\n", 1)[0]  # INVITE sip:NUMBER@<outbound proxy>
        raw.send(b"\x00\xff\xfe not sip at all")
        raw.send(b"SIP/2.0 abc Nope\r\n\r\n")
        raw.reply("180 Ringing", skip="Call-ID")
        raw.reply("180 Ringing", cseq="x INVITE")
        stats = ep.backend.client.stats
        deadline = time.monotonic() + 3
        while stats["malformed"] + stats["handler_errors"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stats["malformed"] + stats["handler_errors"] >= 3, stats  # seen, and survived
        g729_only = ("v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                     "m=audio 40000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n")
        raw.reply("200 OK", body=g729_only)  # answered, but with no codec we can relay
        raw.receive("ACK")
        raw.receive("BYE")
        unanswered = ep.log.wait_for(CallbackUnanswered, timeout=5)
        assert unanswered.reason == "failed"
        agent.wait_event("CALL_CLOSED", timeout=5)

        # The endpoint still works: the next attempt is refused busy and reported as such.
        ep.backend.call_back("call-original-0002", NUMBER, AgentEndpoint(10, agent.contact), 10, 10)
        raw.receive("INVITE")
        raw.reply("486 Busy Here")
        raw.receive("ACK")
        busy = ep.log.wait_for(CallbackUnanswered, timeout=5, where=lambda e: e.call_id == "call-original-0002")
        assert busy.reason == "busy"
    finally:
        agent.stop()
        raw.sock.close()
    assert not ep.log.of(CallbackAnswered) and not ep.log.of(CallHungUp)


def test_a_repeated_challenge_is_acked_and_changes_nothing(endpoint_factory: Any, tmp_path: Path) -> None:
    """The INVITE goes out once (Timer A only after 0.5 s without an answer); a challenge that comes twice
    (a trunk retransmitting its 401) is ACKed each time on the first INVITE's transaction, the INVITE is
    re-sent with credentials once, and the duplicate is not taken for a refusal."""
    raw = RawCustomer()
    ep = endpoint_factory(outbound_proxy=f"127.0.0.1:{raw.port}", username="callcentre", password="trunk-secret")
    agent = start_agent(tmp_path)

    def datagrams(seconds: float) -> list[str]:
        seen, deadline = [], time.monotonic() + seconds
        raw.sock.settimeout(0.05)
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                seen.append(raw.sock.recvfrom(65535)[0].decode(errors="replace"))
        raw.sock.settimeout(5)
        return seen

    def cseq(text: str) -> str:
        found = re.search(r"^CSeq:[ \t]*(.*?)\r$", text, re.M | re.I)
        return found.group(1) if found else ""

    try:
        ep.backend.call_back(ORIGINAL_CALL, NUMBER, AgentEndpoint(11, agent.contact), 10, 10)
        raw.receive("INVITE")
        assert [m for m in datagrams(0.3) if m.startswith("INVITE ")] == []  # sent once, not twice
        first_branch = re.search(r"branch=([^;,\s]+)", raw.header("Via"))
        challenge = 'WWW-Authenticate: Digest realm="trunk.test", nonce="n1"'
        for _ in range(2):
            raw.reply("401 Unauthorized\r\n" + challenge)
        seen = datagrams(0.4)
        acks = [m for m in seen if m.startswith("ACK ")]
        invites = [m for m in seen if m.startswith("INVITE ")]
        assert [cseq(a) for a in acks] == ["1 ACK", "1 ACK"], seen
        assert first_branch is not None and all(first_branch.group(1) in a for a in acks)
        assert len(invites) == 1 and cseq(invites[0]) == "2 INVITE" and "Authorization: Digest" in invites[0]
        assert not ep.log.of(CallbackUnanswered)  # the repeated 401 was not a refusal
        raw.request = invites[0]
        raw.reply("486 Busy Here")
        busy = ep.log.wait_for(CallbackUnanswered, timeout=5)
        assert busy.reason == "busy"
        agent.wait_event("CALL_CLOSED", timeout=5)
    finally:
        agent.stop()
        raw.sock.close()


def test_digest_challenge_is_answered(endpoint_factory: Any, tmp_path: Path) -> None:
    """The customer's side (a trunk) challenges the INVITE; sipp's ``verifyauth`` checks our answer."""
    challenge = """
  <send>
    <![CDATA[
      SIP/2.0 401 Unauthorized
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      WWW-Authenticate: Digest realm="trunk.test", nonce="[pid]n[call_number]cb", qop="auth"
      Content-Length: 0
    ]]>
  </send>
  <recv request="ACK"/>
  <recv request="INVITE" crlf="true">
    <action><verifyauth assign_to="authvalid" username="callcentre" password="trunk-secret"/></action>
  </recv>
  <nop hide="true" test="authvalid" next="good"/>
  <nop><action><exec int_cmd="stop_now"/></action></nop>
  <label id="good"/>
"""
    sink = RtpSink().start()
    run = customer(tmp_path, "callback_uas.xml", auth=challenge, sinkport=str(sink.port))
    ep = endpoint_factory(outbound_proxy=proxy_of(run), username="callcentre", password="trunk-secret")
    agent = start_agent(tmp_path)
    try:
        run.start()
        ep.backend.call_back(ORIGINAL_CALL, NUMBER, AgentEndpoint(8, agent.contact), 10, 10)
        ep.log.wait_for(CallbackAnswered, timeout=10)
        ep.backend.hangup(ORIGINAL_CALL)  # platform hang-up: BYE to both
        hung = ep.log.wait_for(CallHungUp, timeout=5)
        assert hung.by == "platform"
        assert run.wait(10) == 0, run.errors()
        agent.wait_event("CALL_CLOSED", timeout=5)
    finally:
        run.stop()
        agent.stop()
        sink.stop()


def test_callback_through_kamailio_to_a_registered_customer(endpoint_factory: Any, tmp_path: Path) -> None:
    """kamailio is the outbound proxy; the customer's phone (baresip) registered to it; the customer hangs up."""
    kamailio = start_kamailio(tmp_path / "kamailio")
    agent = start_agent(tmp_path)
    phone = start_agent(tmp_path, user=NUMBER, registrar=f"{kamailio.host}:{kamailio.port}")
    try:
        phone.wait_registered()
        ep = endpoint_factory(outbound_proxy=f"{kamailio.host}:{kamailio.port}")
        ep.backend.call_back(ORIGINAL_CALL, NUMBER, AgentEndpoint(9, agent.contact), 10, 10)
        ep.log.wait_for(CallbackAnswered, timeout=10)
        call = ep.backend.calls[ORIGINAL_CALL]
        assert call.leg.routes  # kamailio record-routed: in-dialog requests go through it
        time.sleep(2.0)
        assert call.leg.media is not None and call.agent is not None and call.agent.leg.media is not None
        # both phones send a tone; each reaches the other through our relay
        assert call.leg.media.stats.received_loud > 5 and call.leg.media.stats.relayed > 30
        assert call.agent.leg.media.stats.received_loud > 5 and call.agent.leg.media.stats.relayed > 30
        phone.hangup()  # the customer's BYE, through kamailio
        hung = ep.log.wait_for(CallHungUp, timeout=5)
        assert hung.call_id == ORIGINAL_CALL and hung.by == "caller"
        agent.wait_event("CALL_CLOSED", timeout=5)  # the agent's leg was ended
    finally:
        phone.stop()
        agent.stop()
        kamailio.stop()
    assert names(ep.log)[:3] == ["AgentAnswered", "CallbackAnswered", "CallHungUp"]


CUSTOMER_HANGS_UP = """
  <pause milliseconds="TALK_MS"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: <sip:customer@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
      To: [$platform]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" next="done"/>
"""


def hangs_up(run: SippRun, talk_ms: int) -> None:
    """Make the customer's scenario send BYE after talking ``talk_ms`` (From/To taken from our ACK)."""
    ack = '<recv request="ACK" rtd="true" crlf="true"/>'
    keep_from = ('<recv request="ACK" rtd="true" crlf="true"><action>'
                 '<ereg regexp=".*" search_in="hdr" header="From:" assign_to="platform"/></action></recv>')
    text = run.scenario.read_text()
    assert ack in text
    text = text.replace(ack, keep_from).replace("<!--HANGUP-->", CUSTOMER_HANGS_UP.replace("TALK_MS", str(talk_ms)))
    run.scenario.write_text(text)


def stereo_levels(path: str) -> tuple[int, int]:
    """Loud 20 ms frames on the left (caller = the customer) and right (agent) channels of a recording."""
    import wave

    with wave.open(path) as wav:
        assert wav.getnchannels() == 2 and wav.getframerate() == 8000
        pcm = wav.readframes(wav.getnframes())
    left, right = audioop.tomono(pcm, 2, 1, 0), audioop.tomono(pcm, 2, 0, 1)

    def loud(mono: bytes) -> int:
        return sum(1 for i in range(0, len(mono) - 319, 320) if audioop.rms(mono[i : i + 320], 2) > 300)

    return loud(left), loud(right)


def test_platform_calls_back_a_queued_caller_who_chose_a_callback(demo_settings: Settings, tmp_path: Path) -> None:
    """End to end through ``build_platform`` and real time: two sipp callers queue for billing (one agent
    staffed and busy); the second hears the callback offer in an announcement, presses 1 (RFC 2833 pcap)
    and is hung up on, keeping their place. The first caller leaves. An agent becomes available; the
    dispatcher reserves them for the callback and asks the SIP endpoint to call back: the agent (baresip)
    answers, the customer (sipp UAS) is dialled, they talk, the customer hangs up. The conversation is
    recorded under the original call, customer on the left channel, agent on the right."""
    from sqlalchemy import select, update

    from callcentre.db.models import Agent, Call, QueueEntry, Recording
    from callcentre.demo_data import demo_customer
    from callcentre.domain.events import AgentStateChanged, CallbackRequested, CallQueued
    from tests.integration.sip_fixtures import start_platform
    from tests.sipp import render_scenario

    sink = RtpSink().start()
    callee = customer(tmp_path, "callback_uas.xml", sinkport=str(sink.port))
    hangs_up(callee, talk_ms=3000)
    settings = demo_settings.replace(
        "sip", host="127.0.0.1", port=0, rtp_port_low=0, rtp_port_high=0, numbers="1000",
        outbound_proxy=proxy_of(callee),
    ).replace("routing", callback_ring_seconds=10.0, announce_every=1.5, callback_offer_after=0.0)
    running = start_platform(settings)
    dispatcher = running.platform.services["dispatcher"]
    for i in range(40):  # live history (40 handled calls of 300 s), so the wait can be estimated
        dispatcher.window("billing").handled(time.time() - i, 300.0)
    agent = start_agent(tmp_path, user="agent06")
    callers: list[SippRun] = []
    try:
        with running.platform.session_factory() as s:
            ids = {a.login: a.id for a in s.scalars(select(Agent))}
            s.execute(update(Agent).values(state="logged_out"))
            s.execute(update(Agent).where(Agent.id == ids["agent01"]).values(state="on_call"))  # staffed, busy
            s.execute(update(Agent).where(Agent.id == ids["agent06"]).values(sip_contact=agent.contact))
            s.commit()
        queued: list[str] = []
        for n, digits in ((1, "1"), (2, "1,,1,,,1")):  # menu 1 = billing; then the callback key
            work = workdir(tmp_path, f"caller{n}")
            scenario = render_scenario("agent_call.xml", work, digits=digits, first_pause_ms=600)
            run = SippRun(scenario, running.target, work, timeout_s=40,
                          variables={"sinkport": str(sink.port), "caller": demo_customer(n)["phone"]})
            callers.append(run.start())
            queued.append(running.log.wait_for(CallQueued, timeout=15, where=lambda e: e.call_id not in queued)
                          .call_id)
        first, chooser = queued
        requested = running.log.wait_for(CallbackRequested, timeout=15)
        assert requested.call_id == chooser and requested.keep_place
        assert callers[1].wait(20) == 0, callers[1].errors()  # "we will call you back", then our BYE
        running.log.wait_for(CallHungUp, timeout=5, where=lambda e: e.call_id == chooser)
        with running.platform.session_factory() as s:
            chosen = s.get(Call, chooser)
            assert chosen is not None and (chosen.state, chosen.outcome) == ("ended", "callback")
        assert chooser not in running.backend.calls  # the caller's own leg is gone
        running.backend.hangup(first)  # the first caller leaves the queue; the callback is next
        assert callers[0].wait(10) == 0, callers[0].errors()

        callee.start()
        with running.platform.session_factory() as s:
            s.execute(update(Agent).where(Agent.id == ids["agent06"]).values(state="available"))
            s.commit()
        running.platform.bus.publish(AgentStateChanged(ids["agent06"], "available"))

        answered = running.log.wait_for(AgentAnswered, timeout=10, where=lambda e: e.call_id == chooser)
        assert answered.agent_id == ids["agent06"]
        running.log.wait_for(CallbackAnswered, timeout=10)
        hung = running.log.wait_for(CallHungUp, timeout=15, where=lambda e: e.call_id == chooser and
                                    e.by == "caller" and running.log.of(CallbackAnswered) != [])
        assert hung.call_id == chooser
        assert callee.wait(10) == 0, callee.errors()
        agent.wait_event("CALL_CLOSED", timeout=5)  # the agent's leg was ended
        time.sleep(0.5)  # the recorder saves on the bus thread
    finally:
        for run in callers:
            run.stop()
        callee.stop()
        agent.stop()
        sink.stop()
        running.platform.stop()

    call_id = chooser
    dialled = running.log.events.index(answered) - 1  # from the agent's answer on, not the first call's hang-up
    order = [type(e).__name__ for e in running.log.events[dialled:]
             if e.call_id == call_id and type(e) in (AgentAnswered, CallbackAnswered, CallHungUp)]
    assert order[:2] == ["AgentAnswered", "CallbackAnswered"] and "CallHungUp" in order[2:], [
        (type(e).__name__, getattr(e, "by", "")) for e in running.log.events if e.call_id == call_id]
    with running.platform.session_factory() as s:
        entry = s.scalars(select(QueueEntry).where(QueueEntry.call_id == call_id)).one()
        assert entry.callback_attempts == 1
        call = s.get(Call, call_id)
        assert call is not None and call.answered_at is not None
        conversations = s.scalars(
            select(Recording).where(Recording.call_id == call_id, Recording.kind == "conversation")).all()
        assert len(conversations) == 1
        customer_loud, agent_loud = stereo_levels(conversations[0].path)
        assert customer_loud > 25 and agent_loud > 25  # both voices, each on its own channel


@pytest.fixture(name="webrtc_gateway")
def webrtc_gateway_fixture() -> Iterator[Any]:
    from callcentre.settings import WebRtcSettings
    from telephony.webrtc.gateway import WebRtcGateway

    gw = WebRtcGateway(WebRtcSettings())
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


def test_browser_agent_callback_goes_through_the_webrtc_gateway(
    endpoint_factory: Any, tmp_path: Path, webrtc_gateway: Any, peer: Any
) -> None:
    """``call_back`` through :class:`BrowserAgentBackend`: a browser agent (aiortc, as in
    test_webrtc_gateway.py) is rung at the gateway, answers in the page, then the customer (sipp) is dialled
    and hears the agent's 440 Hz; a browser agent with no live session is not rung at all."""
    from telephony.webrtc.backend import BrowserAgentBackend

    gateway = webrtc_gateway
    sink = RtpSink().start()
    run = customer(tmp_path, "callback_uas.xml", sinkport=str(sink.port))
    ep = endpoint_factory(outbound_proxy=proxy_of(run))
    wrapped = BrowserAgentBackend(ep.backend, gateway)
    wrapped.bus = ep.bus  # the gateway already runs (fixture), so not wrapped.start()
    capable = can_call_back(wrapped)  # the wrapper offers it because the SIP endpoint can
    assert capable
    try:
        wrapped.call_back("call-offline", NUMBER, AgentEndpoint(2, "browser"), 10, 10)
        missed = ep.log.wait_for(AgentNoAnswer, timeout=2)
        assert missed.call_id == "call-offline" and "call-offline" not in ep.backend.calls

        peer.connect(gateway, 3)
        deadline = time.monotonic() + 10
        while gateway.session_state(3) != "connected" and time.monotonic() < deadline:
            time.sleep(0.05)
        run.start()
        wrapped.call_back(ORIGINAL_CALL, NUMBER, AgentEndpoint(3, "browser"), 10, 10)
        wrapped.answer_agent(ORIGINAL_CALL, 3)  # the agent presses Answer (accepted when the INVITE arrives)
        ep.log.wait_for(AgentAnswered, timeout=10)
        ep.log.wait_for(CallbackAnswered, timeout=10)
        loud = sink.loud_frames
        time.sleep(1.5)
        assert sink.loud_frames - loud > 20  # the browser's voice reaches the customer
        call = ep.backend.calls[ORIGINAL_CALL]
        assert call.leg.media is not None and call.leg.media.stats.relayed > 20  # and the customer's the browser
        wrapped.hangup(ORIGINAL_CALL)
        assert ep.log.wait_for(CallHungUp, timeout=5).by == "platform"
        assert run.wait(10) == 0, run.errors()
    finally:
        run.stop()
        sink.stop()
