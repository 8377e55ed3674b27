"""The WebRTC gateway on loopback: SIP from the backend's side, audio and RFC 4733 digits through the
bridge, quality stored, ICE limited to allowed networks, and the console's signalling API.

The browser here is aiortc (a complete WebRTC implementation: ICE, DTLS-SRTP, RTCP) standing in
for Chromium, which tests/e2e/test_webrtc_browser.py drives for real; the caller's side is the
SIP endpoint's own media engine (telephony.rtp_relay), as in production.
"""

from __future__ import annotations

import asyncio
import audioop
import math
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from callcentre.bus import EventBus
from callcentre.db.models import Agent, WebRtcLegQuality
from callcentre.db.session import session_scope
from callcentre.domain.events import AgentStateChanged
from callcentre.settings import Settings, WebRtcSettings
from telephony.audio import EncodedClip, encode, split_frames, tone_linear16
from telephony.rtp_relay import MediaEngine, RtpSession
from telephony.sdp import build_sdp, parse_offer
from telephony.webrtc.gateway import WebRtcGateway
from telephony.webrtc.ice import CandidateFilter, restrict_host_addresses
from telephony.webrtc.quality import save_quality
from telephony.webrtc.session import SignallingError
from tests.e2e.console_seed import PASSWORD, seed

pytestmark = [pytest.mark.peer]


# ---- a stand-in browser: aiortc on its own loop ---------------------------------------------------
@dataclass
class Browser:
    loop: asyncio.AbstractEventLoop
    pc: Any = None
    levels: list[int] = field(default_factory=list)
    readers: list[Any] = field(default_factory=list)
    mic_level: float = 0.3

    def run(self, coro: Any, timeout: float = 20.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def connect(self, gateway: WebRtcGateway, agent_id: int, only_codec: str | None = None) -> str:
        async def go() -> str:
            from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
            from aiortc.mediastreams import AudioStreamTrack

            browser = self

            class Mic(AudioStreamTrack):
                n = 0

                async def recv(self) -> Any:
                    frame = await super().recv()
                    count = frame.samples
                    samples = b"".join(
                        struct.pack("<h", int(32767 * browser.mic_level * math.sin(2 * math.pi * 440 * (self.n + i)
                                                                                    / frame.sample_rate)))
                        for i in range(count))
                    self.n += count
                    frame.planes[0].update(samples)
                    return frame

            self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            self.pc.addTrack(Mic())
            if only_codec is not None:  # a browser that insists on one codec
                from aiortc import RTCRtpSender

                codecs = [c for c in RTCRtpSender.getCapabilities("audio").codecs
                          if c.mimeType.lower() == f"audio/{only_codec}"]
                self.pc.getTransceivers()[0].setCodecPreferences(codecs)

            @self.pc.on("track")
            def on_track(track: Any) -> None:
                async def read() -> None:
                    while True:
                        try:
                            frame = await track.recv()
                        except Exception:
                            return
                        data = bytes(frame.planes[0])[: frame.samples * 2]
                        self.levels.append(audioop.rms(data, 2))
                self.readers.append(asyncio.ensure_future(read()))

            await self.pc.setLocalDescription(await self.pc.createOffer())
            offer = self.pc.localDescription.sdp
            answer = await asyncio.get_running_loop().run_in_executor(None, gateway.offer, agent_id, offer)
            await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            return str(answer)

        return str(self.run(go()))

    def close(self) -> None:
        if self.pc is not None:
            self.run(self.pc.close())


@pytest.fixture(name="peer")
def peer_fixture() -> Iterator[Browser]:
    """An aiortc peer standing in for the agent's browser (not pytest-playwright's ``browser``)."""
    restrict_host_addresses(["127.0.0.1"])
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    b = Browser(loop)
    try:
        yield b
    finally:
        try:
            b.close()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)


@pytest.fixture
def gateway() -> Iterator[WebRtcGateway]:
    gw = WebRtcGateway(WebRtcSettings())
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def media() -> Iterator[MediaEngine]:
    engine = MediaEngine("127.0.0.1")
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


# ---- SIP as the backend speaks it ----------------------------------------------------------------
class Backend:
    """Sends the INVITE/BYE the SIP endpoint sends when it rings an agent, and reads the answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]

    def request(self, gw: WebRtcGateway, text: str) -> None:
        self.sock.sendto(text.encode(), gw.address)

    def invite(self, gw: WebRtcGateway, uri: str, rtp_port: int, call: str = "c1") -> None:
        sdp = build_sdp(1, "127.0.0.1", rtp_port, 0, 101)
        self.request(gw, f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{call}\r\n"
                         f"From: <sip:cc@127.0.0.1:{self.port}>;tag=t{call}\r\nTo: <{uri}>\r\nCall-ID: {call}@test\r\n"
                         f"CSeq: 1 INVITE\r\nContact: <sip:cc@127.0.0.1:{self.port}>\r\n"
                         f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")

    def bye(self, gw: WebRtcGateway, call: str = "c1") -> None:
        self.request(gw, f"BYE sip:webrtc@{gw.address[0]}:{gw.address[1]} SIP/2.0\r\n"
                         f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bKbye{call}\r\n"
                         f"From: <sip:cc@127.0.0.1:{self.port}>;tag=t{call}\r\nTo: <sip:x@x>;tag=y\r\n"
                         f"Call-ID: {call}@test\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n")

    def status(self) -> tuple[int, bytes]:
        data = self.sock.recv(8192)
        return int(data.split()[1]), data

    def until(self, code: int) -> bytes:
        for _ in range(10):
            status, data = self.status()
            if status == code:
                return data
        raise AssertionError(f"no {code}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def backend() -> Iterator[Backend]:
    b = Backend()
    try:
        yield b
    finally:
        b.close()


def tone_clip(seconds: float) -> EncodedClip:
    pcm = tone_linear16((300.0,), seconds, 0.3)
    return EncodedClip("tone", 0, tuple(encode(f, 0) for f in split_frames(pcm)))


def test_invites_need_the_agent_token_a_live_session_and_a_free_agent(
    gateway: WebRtcGateway, backend: Backend, peer: Browser, media: MediaEngine
) -> None:
    rtp = media.open_session(0, 101)
    uri = gateway.agent_uri(5)
    forged = re.sub(r"webrtc-5-[0-9a-f]+@", "webrtc-5-0000000000000000@", uri)
    backend.invite(gateway, forged, rtp.local_port, "forged")
    assert backend.status()[0] == 404
    gateway.expect("call-a", 5)
    time.sleep(0.05)
    backend.invite(gateway, uri, rtp.local_port, "nosession")
    assert backend.status()[0] == 480  # no live WebRTC session for agent 5
    # Garbage and unknown methods get answers, and the gateway keeps working.
    backend.request(gateway, "this is not SIP\r\n\r\n")
    backend.request(gateway, f"OPTIONS sip:webrtc@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{backend.port};"
                             "branch=z9hG4bKo\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: o@t\r\n"
                             "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    assert backend.until(200)
    peer.connect(gateway, 5)
    deadline = time.monotonic() + 10
    while gateway.session_state(5) != "connected" and time.monotonic() < deadline:
        time.sleep(0.05)
    gateway.expect("call-b", 5)
    time.sleep(0.05)
    backend.invite(gateway, uri, rtp.local_port, "ok")
    backend.until(180)
    gateway.expect("call-c", 5)
    time.sleep(0.05)
    backend.invite(gateway, uri, rtp.local_port, "second")
    assert backend.until(486)  # the agent is already being rung


def test_audio_both_ways_digits_mute_and_quality(
    gateway: WebRtcGateway, backend: Backend, peer: Browser, media: MediaEngine
) -> None:
    digits: list[str] = []
    caller: RtpSession = media.open_session(0, 101, on_dtmf=digits.append)
    answer = peer.connect(gateway, 9)
    candidates = [line.split()[4] for line in answer.splitlines() if line.startswith("a=candidate:")]
    assert candidates and set(candidates) == {"127.0.0.1"}
    assert " 0 " in next(line for line in answer.splitlines() if line.startswith("m=audio")) + " "
    deadline = time.monotonic() + 10
    while gateway.session_state(9) != "connected" and time.monotonic() < deadline:
        time.sleep(0.05)

    gateway.expect("call-1", 9)
    time.sleep(0.05)
    backend.invite(gateway, gateway.agent_uri(9), caller.local_port, "q1")
    backend.until(180)
    assert gateway.answer("call-1", 9)
    ok = backend.until(200)
    sdp = parse_offer(ok.split(b"\r\n\r\n", 1)[1].decode())
    assert sdp.choose_audio() == 0 and sdp.telephone_event() == 101
    caller.set_remote(sdp.address, sdp.port)
    caller.play([tone_clip(3.0)])
    peer.levels.clear()
    time.sleep(2.5)
    loud_at_browser = sum(1 for level in peer.levels if level > 1000)
    assert loud_at_browser > 80, f"{loud_at_browser} loud frames of {len(peer.levels)} at the browser"
    assert caller.stats.received_loud > 10, "no agent audio reached the caller leg"

    # Keypad digits reach the caller's leg as RFC 4733 events, one per key.
    gateway.send_dtmf("call-1", 9, "1#")
    deadline = time.monotonic() + 3
    while len(digits) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert digits == ["1", "#"]

    # Mute: the caller hears silence from the agent.
    gateway.mute("call-1", 9, True)
    time.sleep(0.3)
    before = caller.stats.received_loud
    received_before = caller.stats.received_audio
    time.sleep(1.5)
    assert caller.stats.received_audio - received_before > 50
    assert caller.stats.received_loud == before
    gateway.mute("call-1", 9, False)

    backend.bye(gateway, "q1")
    assert backend.until(200)
    deadline = time.monotonic() + 3
    while ("call-1", 9) not in gateway.quality and time.monotonic() < deadline:
        time.sleep(0.05)
    quality = gateway.quality[("call-1", 9)]
    assert quality.codec == "PCMU"
    assert quality.packets_received > 150 and quality.packets_lost == 0
    assert quality.frames_to_browser > 100 and quality.frames_from_browser > 150
    assert 0 <= quality.jitter_ms < 30


def test_browser_insisting_on_opus_gets_resampled_audio_both_ways(
    gateway: WebRtcGateway, backend: Backend, peer: Browser, media: MediaEngine
) -> None:
    caller: RtpSession = media.open_session(0, 101)
    answer = peer.connect(gateway, 11, only_codec="opus")
    audio_line = next(line for line in answer.splitlines() if line.startswith("m=audio"))
    assert "opus/48000" in answer and audio_line.split()[3] != "0"
    deadline = time.monotonic() + 10
    while gateway.session_state(11) != "connected" and time.monotonic() < deadline:
        time.sleep(0.05)
    gateway.expect("call-o", 11)
    time.sleep(0.05)
    backend.invite(gateway, gateway.agent_uri(11), caller.local_port, "o1")
    backend.until(180)
    assert gateway.answer("call-o", 11)
    sdp = parse_offer(backend.until(200).split(b"\r\n\r\n", 1)[1].decode())
    assert sdp.choose_audio() == 0  # the SIP side stays G.711
    caller.set_remote(sdp.address, sdp.port)
    caller.play([tone_clip(3.0)])
    peer.levels.clear()
    time.sleep(2.5)
    assert sum(1 for level in peer.levels if level > 1000) > 80
    assert caller.stats.received_loud > 10
    backend.bye(gateway, "o1")
    backend.until(200)
    deadline = time.monotonic() + 3
    while ("call-o", 11) not in gateway.quality and time.monotonic() < deadline:
        time.sleep(0.05)
    quality = gateway.quality[("call-o", 11)]
    assert quality.codec == "opus" and quality.packets_lost == 0 and quality.frames_from_browser > 100


def test_offers_from_outside_the_allowed_networks_are_refused(gateway: WebRtcGateway) -> None:
    offer = "\r\n".join([
        "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "m=audio 9 UDP/TLS/RTP/SAVPF 0", "c=IN IP4 0.0.0.0",
        "a=candidate:1 1 udp 2130706431 192.0.2.7 50000 typ host",
        "a=candidate:2 1 udp 2130706431 abcd-1234.local 50002 typ host",
        "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuvwx", "a=fingerprint:sha-256 " + ":".join(["AA"] * 32),
        "a=setup:actpass", "a=mid:0", "a=rtpmap:0 PCMU/8000", "a=sendrecv", "",
    ])
    with pytest.raises(SignallingError, match="allowed_networks"):
        gateway.offer(3, offer)
    assert gateway.session_state(3) is None
    kept, dropped = CandidateFilter(["127.0.0.0/8"]).filter_sdp(
        offer.replace("192.0.2.7 50000", "127.0.0.1 50000"))
    assert dropped == 1 and "127.0.0.1 50000" in kept and ".local" not in kept


# ---- the console side: signalling API, agent state following the session, stored quality ---------
def _login(app: Any, who: str) -> tuple[Any, str]:
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    r = client.post("/login", data={"login": who, "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 302
    page = client.get(r.location, follow_redirects=True).get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    return client, token


@dataclass
class FakelessPlatform:
    """What create_app reads from a platform: a real bus, real sessions, and a backend with a gateway."""

    session_factory: sessionmaker[Session]
    bus: EventBus
    backend: Any


def test_signalling_api_requires_an_agent_login_csrf_and_a_gateway(
    settings: Settings, session_factory: sessionmaker[Session], gateway: WebRtcGateway, tmp_path: Any
) -> None:
    from agent_console.app import create_app
    from telephony.memory import MemoryBackend
    from telephony.webrtc.backend import BrowserAgentBackend

    seed(session_factory, tmp_path / "rec")
    with_gateway = create_app(settings, FakelessPlatform(session_factory, EventBus(),
                                                         BrowserAgentBackend(MemoryBackend(), gateway)))
    anonymous = with_gateway.test_client()
    assert anonymous.post("/api/webrtc/offer", json={}).status_code in (400, 401)
    assert anonymous.get("/api/webrtc/config").status_code == 401
    sup, sup_token = _login(with_gateway, "supervisor")
    assert sup.post("/api/webrtc/offer", json={"type": "offer", "sdp": "v=0"},
                    headers={"X-CSRFToken": sup_token}).status_code == 403
    agent, token = _login(with_gateway, "agent01")
    assert agent.post("/api/webrtc/offer", json={"type": "offer", "sdp": "v=0"}).status_code == 400  # no CSRF
    r = agent.post("/api/webrtc/offer", json={"type": "answer"}, headers={"X-CSRFToken": token})
    assert r.status_code == 400 and "offer" in r.get_json()["error"]
    r = agent.post("/api/webrtc/offer", json={"type": "offer", "sdp": "v=0\r\n"}, headers={"X-CSRFToken": token})
    assert r.status_code == 400 and "audio" in r.get_json()["error"]
    config = agent.get("/api/webrtc/config").get_json()
    assert config == {"enabled": True, "ice_servers": [], "state": None, "session": None}
    with session_scope(session_factory) as db:
        a = db.scalar(select(Agent).where(Agent.login == "agent01"))
        assert a is not None
        a.softphone = "browser"
    page = agent.get("/agent").get_data(as_text=True)
    assert '"softphone": "webrtc"' in page and "softphone-webrtc.js" in page

    without = create_app(settings, FakelessPlatform(session_factory, EventBus(), MemoryBackend()))
    agent2, token2 = _login(without, "agent02")
    r = agent2.post("/api/webrtc/offer", json={"type": "offer", "sdp": "v=0"}, headers={"X-CSRFToken": token2})
    assert r.status_code == 503
    assert agent2.get("/api/webrtc/config").get_json()["enabled"] is False


def test_agent_is_not_ready_while_the_session_is_down(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Any
) -> None:
    from agent_console.app import create_app
    from agent_console.context import EXTENSION_KEY
    from agent_console.webrtc import SOFTPHONE_REASON, SessionWatch

    ids = seed(session_factory, tmp_path / "rec").agents
    bus = EventBus()
    seen: list[AgentStateChanged] = []
    bus.subscribe(AgentStateChanged, seen.append)
    app = create_app(settings, FakelessPlatform(session_factory, bus, None))
    watch = SessionWatch(app.extensions[EXTENSION_KEY])
    agent_id = ids["agent01"]

    def state() -> tuple[str, str]:
        with session_factory() as db:
            a = db.get(Agent, agent_id)
            assert a is not None
            return a.state, a.state_reason

    assert state()[0] == "available"
    watch(agent_id, "failed")
    assert state() == ("not_ready", SOFTPHONE_REASON)
    watch(agent_id, "connected")
    assert state() == ("available", "")
    # An agent who chose Not Ready themselves stays so when the session comes back.
    with session_scope(session_factory) as db:
        a = db.get(Agent, agent_id)
        assert a is not None
        a.state, a.state_reason = "not_ready", "lunch"
    watch(agent_id, "connected")
    assert state() == ("not_ready", "lunch")
    assert [(e.state, e.reason) for e in seen] == [("not_ready", SOFTPHONE_REASON), ("available", "")]


def test_quality_is_stored_with_the_call(session_factory: sessionmaker[Session]) -> None:
    from telephony.webrtc.session import MediaQuality

    save_quality(session_factory, "call-q", 4, MediaQuality("PCMU", 500, 2, 1.5, 1, 2.5, 0.8, 499, 500))
    with session_factory() as db:
        row = db.scalar(select(WebRtcLegQuality).where(WebRtcLegQuality.call_id == "call-q"))
        assert row is not None
        assert (row.agent_id, row.codec, row.packets_received, row.packets_lost, row.jitter_ms) == (
            4, "PCMU", 500, 2, 1.5)
        assert row.round_trip_ms == 0.8


def test_bootstrap_factory_puts_the_sip_endpoint_behind_the_gateway(settings: Settings) -> None:
    from telephony.sip import SipBackend
    from telephony.webrtc.backend import BrowserAgentBackend, build_sip_backend_for_browsers

    wrapped = build_sip_backend_for_browsers(settings)
    assert isinstance(wrapped, BrowserAgentBackend) and isinstance(wrapped.inner, SipBackend)
    assert wrapped.name == "sip" and wrapped.audio_sink is None
    plain = build_sip_backend_for_browsers(settings.replace("webrtc", enabled=False))
    assert isinstance(plain, SipBackend)


def test_lost_session_sets_the_agent_not_ready_until_it_is_back(
    settings: Settings, session_factory: sessionmaker[Session], gateway: WebRtcGateway, peer: Browser,
    tmp_path: Any,
) -> None:
    """Through the real wiring: the console app hooks the gateway's session callbacks to agent state."""
    from agent_console.app import create_app
    from agent_console.webrtc import SOFTPHONE_REASON
    from telephony.memory import MemoryBackend
    from telephony.webrtc.backend import BrowserAgentBackend

    agent_id = seed(session_factory, tmp_path / "rec").agents["agent03"]
    create_app(settings, FakelessPlatform(session_factory, EventBus(), BrowserAgentBackend(MemoryBackend(), gateway)))

    def state() -> tuple[str, str]:
        with session_factory() as db:
            a = db.get(Agent, agent_id)
            assert a is not None
            return a.state, a.state_reason

    def wait_for(expected: tuple[str, str], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while state() != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert state() == expected

    peer.connect(gateway, agent_id)
    deadline = time.monotonic() + 10
    while gateway.session_state(agent_id) != "connected" and time.monotonic() < deadline:
        time.sleep(0.05)
    wait_for(("available", ""))
    peer.close()  # the tab went away: DTLS close, the server's connection closes
    wait_for(("not_ready", SOFTPHONE_REASON))
    peer.pc = None
    peer.connect(gateway, agent_id)  # the page re-establishes its session
    wait_for(("available", ""))


def test_sip_phone_and_browser_agents_share_a_backend(gateway: WebRtcGateway, peer: Browser) -> None:
    """Per-agent choice: SIP contacts pass through untouched; browser agents are rung at the gateway,
    and only while their session is up (otherwise the call goes back at once with AgentNoAnswer)."""
    from callcentre.domain.events import AgentNoAnswer
    from telephony.base import AgentEndpoint
    from telephony.memory import MemoryBackend
    from telephony.webrtc.backend import BrowserAgentBackend

    inner = MemoryBackend()
    wrapped = BrowserAgentBackend(inner, gateway)
    bus = EventBus()
    missed: list[AgentNoAnswer] = []
    bus.subscribe(AgentNoAnswer, missed.append)
    inner.start(bus)
    wrapped.bus = bus  # the gateway is already running (fixture), so not wrapped.start()
    to_sip, to_browser, to_offline = (inner.place_call(f"555000{n}") for n in range(3))

    wrapped.connect_agent(to_sip, AgentEndpoint(1, "sip:agent01@127.0.0.1:5070"), 20)
    wrapped.connect_agent(to_offline, AgentEndpoint(2, "browser"), 20)  # no session: not rung at all
    peer.connect(gateway, 3)
    deadline = time.monotonic() + 10
    while gateway.session_state(3) != "connected" and time.monotonic() < deadline:
        time.sleep(0.05)
    wrapped.connect_agent(to_browser, AgentEndpoint(3, "browser"), 20)

    rung = {cmd[1]: cmd[2].contact for cmd in inner.commands if cmd[0] == "connect_agent"}
    assert rung[to_sip] == "sip:agent01@127.0.0.1:5070"
    assert rung[to_browser] == gateway.agent_uri(3) and rung[to_browser].startswith("sip:webrtc-3-")
    assert to_offline not in rung and [(e.call_id, e.agent_id) for e in missed] == [(to_offline, 2)]
    inner.stop()
