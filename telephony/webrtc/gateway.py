"""The WebRTC gateway: browser agents' audio sessions, reachable by the telephony backend over SIP.

To the platform a browser agent is a SIP endpoint: the backend rings
``sip:webrtc-<agent id>-<token>@<gateway>`` exactly as it rings a SIP softphone, so the caller's
leg, hold music, recording taps and transfers stay in the backend and a browser call records
exactly like a SIP-agent call. The gateway answers that INVITE only when the agent presses Answer
in the console (``answer``), then relays the G.711 RTP to and from the agent's always-on aiortc
session. The token (an HMAC of the agent id with a per-process key) means nobody but the platform
can make an agent's browser play audio; INVITEs for an agent who has no live session, or who is
already talking, are refused (480 / 486) so the backend gives the call back to the queue.

Everything WebRTC runs on one asyncio loop in one thread; the public methods may be called from
any thread (Flask request threads, the backend's event worker) and wait for the loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import secrets
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from callcentre.settings import WebRtcSettings
from telephony.sdp import MediaOffer, SdpError, build_sdp, parse_offer
from telephony.sip_message import RawSip, SipSyntaxError, bad_request_for, build_response, parse, uri_of, user_of
from telephony.webrtc.ice import CandidateFilter, ice_servers, restrict_host_addresses, restrict_peers, split_list
from telephony.webrtc.rtp_leg import RtpLeg
from telephony.webrtc.session import AgentSession, MediaQuality, SignallingError

log = logging.getLogger(__name__)
T = TypeVar("T")
Address = tuple[str, int]
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"
DEAD_STATES = ("failed", "closed")


class GatewayError(RuntimeError):
    """The gateway is not running or did not answer in time."""


@dataclass
class GatewayCall:
    """One INVITE from the backend to one agent (we are the UAS)."""

    sip_call_id: str
    invite: RawSip
    source: Address
    agent_id: int
    call_id: str
    offer: MediaOffer
    local_tag: str = field(default_factory=lambda: secrets.token_hex(5))
    leg: RtpLeg | None = None
    answered: bool = False
    ended: bool = False
    last_response: bytes = b""
    cseq: int = field(default_factory=lambda: random.randint(100, 5000))


class _SipProtocol(asyncio.DatagramProtocol):
    def __init__(self, gateway: WebRtcGateway) -> None:
        self.gateway = gateway
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport here

    def datagram_received(self, data: bytes, addr: Address) -> None:
        try:
            self.gateway._on_datagram(data, addr)
        except Exception:
            log.exception("WebRTC gateway: SIP datagram handling failed (from %s:%s)", *addr)


class WebRtcGateway:
    def __init__(
        self,
        settings: WebRtcSettings,
        *,
        on_session_state: Callable[[int, str], None] | None = None,
        on_quality: Callable[[str, int, MediaQuality], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_session_state = on_session_state
        """Called (in a worker thread) with (agent id, state) when a session connects, fails or closes."""
        self.on_quality = on_quality
        """Called (in a worker thread) with (call id, agent id, quality) when an agent leaves a call."""
        self.candidates = CandidateFilter(split_list(settings.allowed_networks))
        self.ice_servers = ice_servers(settings)
        self.sessions: dict[int, AgentSession] = {}
        self.calls: dict[str, GatewayCall] = {}
        """By SIP Call-ID."""
        self._expected: dict[int, str] = {}
        self._answer_when_invited: dict[tuple[str, int], bool] = {}
        self._key = secrets.token_bytes(32)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sip: _SipProtocol | None = None
        self.address: Address = (settings.sip_host, settings.sip_port)
        self.quality: dict[tuple[str, int], MediaQuality] = {}
        """The last quality per (call, agent), also kept in memory for tests and the benchmark."""

    # ---- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        restrict_host_addresses(split_list(self.settings.interfaces))
        restrict_peers(split_list(self.settings.allowed_networks))
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="webrtc", daemon=True)
        self._thread.start()
        ready.wait()
        self._call(self._bind(), timeout=5)
        log.info("WebRTC gateway: SIP on %s:%s, ICE on %s", *self.address, self.settings.interfaces)

    async def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(
            lambda: _SipProtocol(self), local_addr=(self.settings.sip_host, self.settings.sip_port))
        self._sip = proto
        assert proto.transport is not None
        host, port = proto.transport.get_extra_info("sockname")[:2]
        self.address = (str(host), int(port))

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._call(self._shutdown(), timeout=10)
        except Exception:
            log.exception("WebRTC gateway: shutdown was not clean")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()
        self._loop = None
        self._thread = None

    async def _shutdown(self) -> None:
        for call in list(self.calls.values()):
            if call.answered and not call.ended:
                self._send_bye(call)
            await self._end(call)
        for session in list(self.sessions.values()):
            await session.close()
        self.sessions.clear()
        if self._sip is not None and self._sip.transport is not None:
            self._sip.transport.close()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        if self._loop is None:
            coro.close()
            raise GatewayError("the WebRTC gateway is not running")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError as exc:
            future.cancel()
            raise GatewayError("the WebRTC gateway did not answer in time") from exc

    def _in_worker(self, fn: Callable[..., None], *args: Any) -> None:
        """Callbacks that touch the database run off the media loop."""
        assert self._loop is not None

        def safe() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("WebRTC gateway callback %s failed", getattr(fn, "__name__", fn))

        self._loop.run_in_executor(None, safe)

    # ---- sessions (signalling from the console) -------------------------------------------------
    def offer(self, agent_id: int, sdp: str) -> str:
        """Answer a browser's offer; replaces the agent's previous session (a reconnect)."""
        return self._call(self._offer(agent_id, sdp), timeout=15)

    async def _offer(self, agent_id: int, sdp: str) -> str:
        old = self.sessions.pop(agent_id, None)
        if old is not None:
            await self._session_gone(old)
            await old.close()
        session = AgentSession(agent_id, self.ice_servers, self.candidates, self.settings.codec, self._state_changed)
        self.sessions[agent_id] = session
        try:
            return await session.answer(sdp)
        except SignallingError:
            self.sessions.pop(agent_id, None)
            await session.close()
            raise

    def close_session(self, agent_id: int) -> None:
        self._call(self._close_session(agent_id))

    async def _close_session(self, agent_id: int) -> None:
        session = self.sessions.pop(agent_id, None)
        if session is not None:
            await self._session_gone(session)
            await session.close()
            if self.on_session_state is not None:
                self._in_worker(self.on_session_state, agent_id, "closed")

    def session_state(self, agent_id: int) -> str | None:
        session = self.sessions.get(agent_id)
        return None if session is None else session.state

    def session_id(self, agent_id: int) -> str | None:
        session = self.sessions.get(agent_id)
        return None if session is None else session.id

    def _state_changed(self, session: AgentSession, state: str) -> None:
        if self.sessions.get(session.agent_id) is not session:
            return  # an old session being replaced
        log.info("WebRTC session of agent %s: %s", session.agent_id, state)
        if state in DEAD_STATES:
            assert self._loop is not None
            self._loop.create_task(self._session_gone(session))
        if self.on_session_state is not None and state in ("connected", *DEAD_STATES):
            self._in_worker(self.on_session_state, session.agent_id, state)

    async def _session_gone(self, session: AgentSession) -> None:
        """The agent's audio is gone: leave any call (BYE), so the backend treats it as an agent hang-up."""
        for call in list(self.calls.values()):
            if call.agent_id == session.agent_id and not call.ended:
                if call.answered:
                    self._send_bye(call)
                else:
                    self._respond(call, 480, "Temporarily Unavailable")
                await self._end(call)

    # ---- what the backend wrapper and the console ask -------------------------------------------
    def agent_uri(self, agent_id: int) -> str:
        return f"sip:webrtc-{agent_id}-{self._token(agent_id)}@{self.address[0]}:{self.address[1]}"

    def _token(self, agent_id: int) -> str:
        return hmac.new(self._key, str(agent_id).encode(), hashlib.sha256).hexdigest()[:16]

    def has_session(self, agent_id: int) -> bool:
        session = self.sessions.get(agent_id)
        return session is not None and not session.closed and session.pc.connectionState not in DEAD_STATES

    def expect(self, call_id: str, agent_id: int) -> None:
        """The backend is about to ring this agent for this call."""
        if self._loop is None:
            raise GatewayError("the WebRTC gateway is not running")
        self._loop.call_soon_threadsafe(self._expected.__setitem__, agent_id, call_id)

    def answer(self, call_id: str, agent_id: int) -> bool:
        """The agent pressed Answer: accept the backend's INVITE (now, or as soon as it arrives)."""
        return self._call(self._answer(call_id, agent_id))

    async def _answer(self, call_id: str, agent_id: int) -> bool:
        for call in self.calls.values():
            if call.call_id == call_id and call.agent_id == agent_id and not call.ended:
                await self._accept(call)
                return True
        self._answer_when_invited[(call_id, agent_id)] = True
        return False

    def mute(self, call_id: str, agent_id: int, on: bool) -> None:
        self._call(self._mute(call_id, agent_id, on))

    async def _mute(self, call_id: str, agent_id: int, on: bool) -> None:
        session = self.sessions.get(agent_id)
        if session is not None and session.call_id == call_id:
            session.muted = on

    def send_dtmf(self, call_id: str, agent_id: int | None, digits: str) -> bool:
        return self._call(self._send_dtmf(call_id, agent_id, digits))

    async def _send_dtmf(self, call_id: str, agent_id: int | None, digits: str) -> bool:
        for call in self.calls.values():
            if call.call_id == call_id and (agent_id is None or call.agent_id == agent_id) and call.leg:
                call.leg.send_digits(digits)
                return True
        return False

    def hang_up(self, call_id: str, agent_id: int) -> None:
        """The agent leaves the call from the gateway side (BYE toward the backend)."""
        self._call(self._hang_up(call_id, agent_id))

    async def _hang_up(self, call_id: str, agent_id: int) -> None:
        for call in list(self.calls.values()):
            if call.call_id == call_id and call.agent_id == agent_id and not call.ended:
                if call.answered:
                    self._send_bye(call)
                else:
                    self._respond(call, 486, "Busy Here")
                await self._end(call)

    # ---- SIP --------------------------------------------------------------------------------------
    def _send(self, data: bytes, addr: Address) -> None:
        if self._sip is not None and self._sip.transport is not None:
            self._sip.transport.sendto(data, addr)

    def _on_datagram(self, data: bytes, addr: Address) -> None:
        if data.strip(b"\r\n\x00 ") == b"":
            return
        try:
            msg = parse(data)
        except SipSyntaxError as exc:
            reply = bad_request_for(data, str(exc))
            if reply is not None:
                self._send(reply, addr)
            return
        if not msg.is_request:
            return  # responses to our BYE need no action
        method = msg.method
        assert self._loop is not None
        if method == "INVITE":
            self._loop.create_task(self._on_invite(msg, addr))
        elif method == "BYE":
            self._loop.create_task(self._on_bye(msg, addr))
        elif method == "CANCEL":
            self._loop.create_task(self._on_cancel(msg, addr))
        elif method == "ACK":
            return
        elif method == "OPTIONS":
            self._send(build_response(msg, 200, "OK", extra=[f"Allow: {ALLOW}"]), addr)
        else:
            self._send(build_response(msg, 501, "Not Implemented", extra=[f"Allow: {ALLOW}"]), addr)

    def _agent_of(self, msg: RawSip) -> int | None:
        user = user_of(msg.uri)
        parts = user.split("-")
        if len(parts) != 3 or parts[0] != "webrtc" or not parts[1].isdigit():
            return None
        agent_id = int(parts[1])
        return agent_id if hmac.compare_digest(parts[2], self._token(agent_id)) else None

    async def _on_invite(self, msg: RawSip, addr: Address) -> None:
        existing = self.calls.get(msg.call_id)
        if existing is not None:
            if existing.last_response:
                self._send(existing.last_response, addr)  # retransmission or re-INVITE: same answer
            return
        tag = secrets.token_hex(5)
        agent_id = self._agent_of(msg)
        if agent_id is None:
            self._send(build_response(msg, 404, "Not Found", to_tag=tag), addr)
            return
        call_id = self._expected.pop(agent_id, None)
        session = self.sessions.get(agent_id)
        if call_id is None or session is None or not self.has_session(agent_id):
            self._send(build_response(msg, 480, "Temporarily Unavailable", to_tag=tag), addr)
            return
        if any(c.agent_id == agent_id and not c.ended for c in self.calls.values()):
            self._send(build_response(msg, 486, "Busy Here", to_tag=tag), addr)
            return
        try:
            offer = parse_offer(msg.body.decode("utf-8", errors="replace"))
        except SdpError:
            self._send(build_response(msg, 488, "Not Acceptable Here", to_tag=tag), addr)
            return
        if offer.choose_audio() is None:
            self._send(build_response(msg, 488, "Not Acceptable Here", to_tag=tag), addr)
            return
        call = GatewayCall(msg.call_id, msg, addr, agent_id, call_id, offer, local_tag=tag)
        self.calls[msg.call_id] = call
        self._send(build_response(msg, 100, "Trying"), addr)
        self._respond(call, 180, "Ringing")
        if self._answer_when_invited.pop((call_id, agent_id), False):
            await self._accept(call)

    def _contact(self) -> str:
        return f"Contact: <sip:webrtc@{self.address[0]}:{self.address[1]}>"

    def _respond(self, call: GatewayCall, code: int, reason: str, body: str = "") -> None:
        extra = [self._contact(), f"Allow: {ALLOW}"] if code < 300 else []
        response = build_response(call.invite, code, reason, to_tag=call.local_tag, extra=extra, body=body)
        call.last_response = response
        self._send(response, call.source)

    async def _accept(self, call: GatewayCall) -> None:
        if call.answered or call.ended:
            return
        session = self.sessions.get(call.agent_id)
        if session is None or session.closed:
            self._respond(call, 480, "Temporarily Unavailable")
            await self._end(call)
            return
        leg = await RtpLeg.open(self.settings.sip_host, session.from_caller)
        pt = call.offer.choose_audio()
        assert pt is not None
        leg.payload_type = pt
        leg.event_pt = call.offer.telephone_event() or 101
        leg.remote = (call.offer.address, call.offer.port)
        call.leg = leg
        await session.attach(call.call_id, leg)
        sdp = build_sdp(random.randint(1, 2**31), self.address[0], leg.local_port, pt, leg.event_pt)
        call.answered = True
        self._respond(call, 200, "OK", body=sdp)

    async def _on_bye(self, msg: RawSip, addr: Address) -> None:
        call = self.calls.get(msg.call_id)
        if call is None:
            self._send(build_response(msg, 481, "Call/Transaction Does Not Exist"), addr)
            return
        self._send(build_response(msg, 200, "OK"), addr)
        await self._end(call)

    async def _on_cancel(self, msg: RawSip, addr: Address) -> None:
        call = self.calls.get(msg.call_id)
        if call is None:
            self._send(build_response(msg, 481, "Call/Transaction Does Not Exist"), addr)
            return
        self._send(build_response(msg, 200, "OK", to_tag=call.local_tag), addr)
        if not call.answered:
            self._respond(call, 487, "Request Terminated")
            await self._end(call)

    def _send_bye(self, call: GatewayCall) -> None:
        invite = call.invite
        call.cseq += 1
        target = uri_of(invite.get("contact")) or uri_of(invite.get("from"))
        lines = [
            f"BYE {target} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.address[0]}:{self.address[1]};branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70",
            *[f"Route: {r}" for r in invite.get_all("record-route")],
            f"From: {invite.get('to')};tag={call.local_tag}",
            f"To: {invite.get('from')}",
            f"Call-ID: {call.sip_call_id}",
            f"CSeq: {call.cseq} BYE",
            "Content-Length: 0",
        ]
        self._send(("\r\n".join(lines) + "\r\n\r\n").encode(), call.source)

    async def _end(self, call: GatewayCall) -> None:
        if call.ended:
            return
        call.ended = True
        session = self.sessions.get(call.agent_id)
        quality = None
        if session is not None and session.call_id == call.call_id:
            quality = await session.detach()
        if call.leg is not None:
            call.leg.close()
        assert self._loop is not None
        self._loop.call_later(32.0, lambda: self.calls.pop(call.sip_call_id, None))
        if quality is not None:
            self.quality[(call.call_id, call.agent_id)] = quality
            if self.on_quality is not None:
                self._in_worker(self.on_quality, call.call_id, call.agent_id, quality)
