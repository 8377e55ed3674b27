"""The embedded SIP endpoint: answers calls on pyVoIP's SIP transport, runs IVR actions, bridges agents.

Direct mode: softphones and trunks send ``INVITE sip:<number>@HOST:PORT`` straight to us.
Registered mode: we REGISTER (pyVoIP's request and digest code) to a registrar/proxy such as
Kamailio, and calls arrive through it.

What comes from pyVoIP 1.6.8 (the product owner's choice) and what is ours, and why:

* pyVoIP: the SIP client object (socket, tags, branches, Call-IDs, counters), REGISTER generation
  and digest authentication, and ``SIPMessage`` to read the From/To/Contact of requests.
  The class is chosen by :func:`sip_client_class`, the ONE place that switches between stock
  pyVoIP and the hardened classes of ``telephony/pyvoip_patches.py``.
* ours: the receive loop (pyVoIP's polls with ``sleep(0.01)``, starts 1 s late and loses the
  sender's address), dialogs and responses (pyVoIP answers to the registrar instead of the sender,
  copies Via into its BYE, answers a CANCELled call, waits a fixed 1 s before answering), SDP
  (``telephony/sdp.py``) and media (``telephony/rtp_relay.py``). Each is a defect in DESIGN.md §5.

Threads: the SIP receive thread handles signalling; the media thread sends/receives RTP and runs
timers; the event worker publishes bus events in order, so slow handlers (database writes,
routing) never delay a response or an RTP frame. No customer data (numbers, digits) is logged.
"""

from __future__ import annotations

import logging
import queue
import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyVoIP.VoIP  # noqa: F401  # import before pyVoIP.SIP: pyVoIP 1.6.8 has a circular import
from pyVoIP import SIP as PYVOIP_SIP

from callcentre.bus import EventBus
from callcentre.domain.events import (
    CallAnswered,
    CallArrived,
    CallHungUp,
    DigitsReceived,
    InputTimedOut,
)
from callcentre.domain.ids import new_call_id
from callcentre.settings import Settings, SipSettings
from ivr.actions import Action, Enqueue, Gather, Hangup, RequestCallback, Transfer
from telephony.agent_legs import ALLOW, AgentLegs
from telephony.audio import ClipCache, EncodedClip, encode, split_frames, tone_linear16
from telephony.rtp_relay import MediaEngine, NoRtpPortError
from telephony.sdp import SdpError, build_sdp, parse_offer
from telephony.sip_callback import CallbackDialling
from telephony.sip_message import (
    RawSip,
    SipSyntaxError,
    bad_request_for,
    build_response,
    host_port_of,
    parse,
    uri_of,
    user_of,
)
from telephony.sip_state import Address, AgentLeg, CallerCall, GatherState, Leg, new_tag
from telephony.supervision import Supervision

log = logging.getLogger(__name__)

T1 = 0.5
"""RFC 3261 round-trip estimate: first retransmission interval (doubles up to T2)."""
T2 = 4.0

TYPEAHEAD_LIMIT = 32


def sip_client_class(hardened: bool = True) -> type[Any]:
    """The pyVoIP SIP client class the endpoint builds on: hardened when available, else stock 1.6.8.

    The hardened class (``telephony/pyvoip_patches``) owns the socket, its receive loop and
    registration; with the stock class the endpoint runs its own receive loop and registration
    (stock's would swallow INVITEs and answer the registrar instead of the sender).
    """
    if hardened:
        try:
            from telephony.pyvoip_patches.client import HardenedSIPClient

            found: type[Any] = HardenedSIPClient
            return found
        except ImportError:
            log.warning("telephony.pyvoip_patches is not available; using stock pyVoIP 1.6.8")
    stock: type[Any] = PYVOIP_SIP.SIPClient
    return stock


def _is_hardened(cls: type[Any]) -> bool:
    return hasattr(cls, "handle_datagram")


class _PhoneShim:
    """pyVoIP's SIPClient writes registration status onto its phone; we have no VoIPPhone."""

    _status: Any = None


class SipBackend(CallbackDialling, Supervision, AgentLegs):
    """:class:`telephony.base.TelephonyBackend` on pyVoIP's SIP transport and our media engine."""

    name = "sip"

    def __init__(
        self,
        settings: SipSettings,
        prompts_dir: str | Path,
        *,
        hardened: bool = True,
        hold_music: str | Path | None = None,
        hold_message_every: float = 30.0,
        answer_delay: float = 0.0,
        rtp_timeout: float = 60.0,
    ) -> None:
        self.settings = settings
        self.prompts_dir = Path(prompts_dir)
        self.numbers = {n.strip() for n in settings.numbers.split(",") if n.strip()}
        self.hold_message_every = hold_message_every
        self.answer_delay = answer_delay
        self.rtp_timeout = rtp_timeout
        """A caller who sends no RTP at all for this long has vanished without a BYE: end the call
        (0 = never). Not applied while the caller put us on hold (re-INVITE sendonly/inactive)."""
        """Seconds to ring before answering (0 = at once); a CANCEL in this window gets 487."""
        self.hardened = hardened
        self.bus: EventBus | None = None
        self.media = MediaEngine(settings.host, settings.rtp_port_low, settings.rtp_port_high)
        self.audio_sink: Callable[[str, str, bytes], None] | None = None
        """``(call_id, "caller"|"agent", pcm16)`` for every received audio frame (recording, speech
        menus); called in the media thread, so it must only queue the frame."""
        self.clips = ClipCache()
        self._hold_music_path = hold_music
        self._hold_music: dict[int, EncodedClip] = {}
        self.calls: dict[str, CallerCall] = {}
        self._by_sip: dict[str, CallerCall | AgentLeg] = {}
        self._lock = threading.RLock()
        self._events: queue.Queue[object] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._running = False
        self.client: Any = None
        self.sock: socket.socket | None = None
        self.address: Address = (settings.host, settings.port)
        self.registered = threading.Event()
        self._register_cancel: Callable[[], None] | None = None
        self._register_call_id = ""
        self._own_transport = True
        self.stats = {"invites": 0, "rejected": 0, "garbage": 0, "bad_requests": 0}

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self, bus: EventBus) -> None:
        self.bus = bus
        client_cls = sip_client_class(self.hardened)
        host, port = self.settings.host, self.settings.port
        registrar_host, registrar_port = host, port
        if self.settings.mode == "registered":
            if not self.settings.registrar:
                raise ValueError("sip.mode is 'registered' but sip.registrar is empty (host:port)")
            registrar_host, registrar_port = host_port_of(self.settings.registrar)
        elif self.settings.mode != "direct":
            raise ValueError(f"unknown sip.mode {self.settings.mode!r}; choose one of direct, registered")
        username = self.settings.username or next(iter(sorted(self.numbers)), "callcentre")
        self._running = True
        self.media.start()
        if self.rtp_timeout > 0:
            self.media.call_later(min(5.0, self.rtp_timeout / 2), self._rtp_watchdog)
        if _is_hardened(client_cls):
            self.client = client_cls(
                registrar_host, registrar_port, username, self.settings.password, phone=_PhoneShim(),
                myIP=host, myPort=port, callCallback=self._on_hardened_message,
                register=self.settings.mode == "registered",
            )
            self.registered = self.client.registered
            try:
                self.client.start()  # binds, starts its receive loop, registers (raises if refused)
            except Exception:
                self._running = False
                self.media.stop()
                raise
            self.sock = self.client.s
            self.address = (host, int(self.client.myPort))
            self._own_transport = False
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((host, port))
            self.sock = sock
            self.address = sock.getsockname()
            self.client = client_cls(
                registrar_host, registrar_port, username, self.settings.password,
                phone=_PhoneShim(), myIP=self.address[0], myPort=self.address[1],
            )
            # pyVoIP's client sends through these; we own the socket and its receive loop.
            self.client.s = sock
            self.client.out = sock
            self.client.NSD = True
            self._own_transport = True
            t = threading.Thread(target=self._recv_loop, name="sip-recv", daemon=True)
            t.start()
            self._threads.append(t)
            if self.settings.mode == "registered":
                self._register()
        t = threading.Thread(target=self._event_loop, name="sip-events", daemon=True)
        t.start()
        self._threads.append(t)
        log.info("SIP endpoint listening on %s:%s (%s mode, %s pyVoIP)", *self.address, self.settings.mode,
                 "hardened" if not self._own_transport else "stock")
        if self._customer_uri("0") is None:
            log.warning("callbacks cannot reach customers: set sip.outbound_proxy (direct mode has no registrar)")

    def _on_hardened_message(self, message: Any) -> None:
        source = getattr(message, "source", None) or self.address
        self._on_datagram(bytes(message.raw), (str(source[0]), int(source[1])))

    def stop(self) -> None:
        """Hang up every call (BYE), unregister, then close sockets and threads."""
        if not self._running:
            return
        for call_id in list(self.calls):
            self.hangup(call_id)
        time.sleep(0.05)  # let the BYEs leave before the socket closes
        if self._own_transport:
            if self.settings.mode == "registered" and self.registered.is_set():
                self._register(expires=0)
                time.sleep(0.1)
            if self._register_cancel is not None:
                self._register_cancel()
            self._running = False
            if self.sock is not None:
                try:
                    self.sock.close()
                except OSError:
                    pass
            if self.client is not None:
                self.client.NSD = False
        else:
            self._running = False
            self.client.stop()
        self._events.put(None)
        for t in self._threads:
            t.join(timeout=3)
        self._threads.clear()
        self.media.stop()

    # ---- plumbing -----------------------------------------------------------------------------
    def _publish(self, event: object) -> None:
        self._events.put(event)

    def _event_loop(self) -> None:
        while True:
            event = self._events.get()
            if event is None:
                return
            if self.bus is not None:
                self.bus.publish(event)

    def _send(self, data: bytes, addr: Address) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendto(data, addr)
        except OSError as exc:
            log.debug("SIP send failed: %s", exc)

    def _recv_loop(self) -> None:
        assert self.sock is not None
        self.sock.settimeout(0.5)
        while self._running:
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                if not self._running:
                    return
                continue
            try:
                self._on_datagram(data, addr)
            except Exception:
                # A bug in our handling must not end the endpoint: count it, log it (no payload).
                self.stats["garbage"] += 1
                log.exception("SIP datagram handling failed (from %s:%s)", *addr)

    def _on_datagram(self, data: bytes, addr: Address) -> None:
        if data.strip(b"\r\n\x00 ") == b"":
            return  # keep-alive (CRLF / NUL) pings
        try:
            msg = parse(data)
        except SipSyntaxError as exc:
            self.stats["garbage"] += 1
            reply = bad_request_for(data, str(exc))
            if reply is not None:
                self.stats["bad_requests"] += 1
                self._send(reply, addr)
            return
        if msg.is_request:
            self._on_request(msg, addr)
        else:
            self._on_response(msg, addr)

    # ---- requests -----------------------------------------------------------------------------
    def _on_request(self, msg: RawSip, addr: Address) -> None:
        method = msg.method
        if method == "INVITE":
            self._on_invite(msg, addr)
        elif method == "ACK":
            found = self._by_sip.get(msg.call_id)
            if isinstance(found, CallerCall):
                found.acked = True
        elif method == "BYE":
            self._on_bye(msg, addr)
        elif method == "CANCEL":
            self._on_cancel(msg, addr)
        elif method == "OPTIONS":
            self._send(build_response(msg, 200, "OK", extra=[f"Allow: {ALLOW}"]), addr)
        else:
            self._send(build_response(msg, 501, "Not Implemented", extra=[f"Allow: {ALLOW}"]), addr)

    def _on_invite(self, msg: RawSip, addr: Address) -> None:
        existing = self._by_sip.get(msg.call_id)
        if isinstance(existing, CallerCall):
            if msg.to_tag:  # re-INVITE in the dialog: keep media as is, answer with the same SDP
                self._reinvite(existing, msg, addr)
            elif existing.last_response:
                self._send(existing.last_response, addr)  # retransmission of the first INVITE
            return
        self.stats["invites"] += 1
        if msg.to_tag:
            self._reject(msg, addr, 481, "Call/Transaction Does Not Exist")
            return
        dialled = user_of(msg.uri) or user_of(uri_of(msg.get("to")))
        if dialled not in self.numbers:
            self._reject(msg, addr, 404, "Not Found")
            return
        if msg.get("content-encoding"):
            self._reject(msg, addr, 415, "Unsupported Media Type")
            return
        try:
            offer = parse_offer(msg.body.decode("utf-8", errors="replace"))
        except SdpError:
            self._reject(msg, addr, 488, "Not Acceptable Here",
                         ['Warning: 399 callcentre "no usable SDP offer"'])
            return
        pt = offer.choose_audio()
        if pt is None:
            self._reject(msg, addr, 488, "Not Acceptable Here", ['Warning: 305 callcentre "G.711 only"'])
            return
        call_id = new_call_id()
        try:
            media = self.media.open_session(pt, offer.telephone_event(),
                                            on_dtmf=lambda d: self._on_dtmf(call_id, d))
        except NoRtpPortError:
            self._reject(msg, addr, 503, "Service Unavailable")
            return
        sink = self.audio_sink
        if sink is not None:
            media.on_audio = lambda pcm: sink(call_id, "caller", pcm)
        contact = uri_of(msg.get("contact")) or uri_of(msg.get("from"))
        routes = msg.get_all("record-route")
        leg = Leg(
            sip_call_id=msg.call_id,
            local_tag=new_tag(),
            remote=addr,
            remote_uri=contact,
            local_header="",
            remote_header=msg.get("from"),
            routes=routes,
            cseq=random.randint(1000, 5000),
            media=media,
        )
        leg.local_header = f"{msg.get('to')};tag={leg.local_tag}" if not msg.to_tag else msg.get("to")
        call = CallerCall(call_id, leg, msg, addr, offer)
        with self._lock:
            self.calls[call_id] = call
            self._by_sip[msg.call_id] = call
        ringing = build_response(msg, 180, "Ringing", to_tag=leg.local_tag, extra=[self._contact_header()])
        self._send(build_response(msg, 100, "Trying"), addr)
        if self.answer_delay > 0:
            # Only when we really ring: a 180 right before the 200 can overtake it through a
            # multi-process proxy, and a caller that sees 180 after 200 may drop the call.
            call.last_response = ringing
            self._send(ringing, addr)
        caller_id = user_of(uri_of(msg.get("from")))
        self._publish(CallArrived(call_id, caller_id=caller_id, dialled=dialled, backend=self.name,
                                  backend_ref=msg.call_id))
        if self.answer_delay > 0:
            self.media.call_later(self.answer_delay, lambda: self._answer(call))
        else:
            self._answer(call)

    def _reject(
        self, msg: RawSip, addr: Address, code: int, reason: str, extra: list[str] | None = None
    ) -> None:
        self.stats["rejected"] += 1
        log.info("rejected INVITE with %s %s", code, reason)
        self._send(build_response(msg, code, reason, to_tag=new_tag(), extra=extra), addr)

    def _answer(self, call: CallerCall) -> None:
        with call.lock:
            if call.cancelled or call.answered or call.leg.ended:
                return
            assert call.leg.media is not None
            # No early media: RTP starts with the answer.
            call.leg.media.set_remote(call.offer.address, call.offer.port)
            sdp = build_sdp(random.randint(1, 2**31), self.address[0], call.leg.media.local_port,
                            call.leg.media.payload_type, call.leg.media.event_pt)
            ok = build_response(call.invite, 200, "OK", to_tag=call.leg.local_tag,
                                extra=[self._contact_header(), f"Allow: {ALLOW}"], body=sdp)
            call.last_response = ok
            call.answered = True
            pending, call.pending = call.pending, []
        self._send(ok, call.source)
        self._publish(CallAnswered(call.call_id))
        self.media.call_later(T1, lambda: self._retransmit_ok(call, ok, T1, time.monotonic()))
        for action in pending:
            self.perform(call.call_id, action)

    def _retransmit_ok(self, call: CallerCall, ok: bytes, interval: float, since: float) -> None:
        """RFC 3261 §13.3.1.4: resend the 200 OK (T1, doubling up to T2) until the ACK; none in 64·T1 → BYE."""
        if call.acked or call.leg.ended:
            return
        if time.monotonic() - since >= 64 * T1:
            log.warning("call %s: no ACK for our 200 OK; ending it", call.call_id)
            self.hangup(call.call_id)
            return
        self._send(ok, call.source)
        interval = min(interval * 2, T2)
        self.media.call_later(interval, lambda: self._retransmit_ok(call, ok, interval, since))

    def _rtp_watchdog(self) -> None:
        if not self._running:
            return
        now = time.monotonic()
        for call in list(self.calls.values()):
            media = call.leg.media
            if (media is not None and call.answered and not call.remote_hold
                    and now - media.last_received > self.rtp_timeout):
                log.warning("call %s: no RTP for %.0f s; ending it", call.call_id, self.rtp_timeout)
                self._hangup(call, by="caller", cause="rtp-timeout")
        self.media.call_later(min(5.0, self.rtp_timeout / 2), self._rtp_watchdog)

    def _reinvite(self, call: CallerCall, msg: RawSip, addr: Address) -> None:
        media = call.leg.media
        if media is None:
            return
        try:
            offer = parse_offer(msg.body.decode("utf-8", errors="replace")) if msg.body else None
        except SdpError:
            offer = None
        if offer is not None:
            call.remote_hold = offer.address == "0.0.0.0" or offer.direction in ("sendonly", "inactive")
            media.last_received = time.monotonic()
            if offer.address != "0.0.0.0":
                media.set_remote(offer.address, offer.port)
        sdp = build_sdp(random.randint(1, 2**31), self.address[0], media.local_port, media.payload_type,
                        media.event_pt)
        self._send(build_response(msg, 200, "OK", to_tag=call.leg.local_tag, extra=[self._contact_header()],
                                  body=sdp), addr)

    def _on_cancel(self, msg: RawSip, addr: Address) -> None:
        found = self._by_sip.get(msg.call_id)
        if not isinstance(found, CallerCall) or found.callback is not None:  # we sent a callback's INVITE
            self._send(build_response(msg, 481, "Call/Transaction Does Not Exist"), addr)
            return
        call = found
        self._send(build_response(msg, 200, "OK", to_tag=call.leg.local_tag), addr)
        with call.lock:
            if call.answered:
                return  # too late (RFC 3261 §9.2): the caller will send BYE
            call.cancelled = True
            call.leg.ended = True
        terminated = build_response(call.invite, 487, "Request Terminated", to_tag=call.leg.local_tag)
        self._send(terminated, call.source)
        self._end_call(call, by="caller", cause="cancelled")

    def _on_bye(self, msg: RawSip, addr: Address) -> None:
        found = self._by_sip.get(msg.call_id)
        if found is None:
            self._send(build_response(msg, 481, "Call/Transaction Does Not Exist"), addr)
            return
        self._send(build_response(msg, 200, "OK"), addr)
        if isinstance(found, CallerCall):
            found.leg.ended = True
            self._end_call(found, by="caller", cause="normal")
        else:
            self._agent_hung_up(found)

    # ---- responses (to our INVITE/BYE/CANCEL/REGISTER) --------------------------------------
    def _on_response(self, msg: RawSip, addr: Address) -> None:
        number, method = msg.cseq
        if method == "REGISTER":
            self._on_register_response(msg)
            return
        found = self._by_sip.get(msg.call_id)
        if method != "INVITE":
            return
        if isinstance(found, CallerCall) and found.callback is not None:
            self._on_customer_invite_response(found, msg, number)  # our INVITE to a callback's customer
        elif isinstance(found, AgentLeg):
            self._on_agent_invite_response(found, msg, number)

    # ---- IVR actions --------------------------------------------------------------------------
    def perform(self, call_id: str, action: Action) -> None:
        call = self.calls.get(call_id)
        if call is None:
            log.info("action %s for call %s which has ended; ignored", type(action).__name__, call_id)
            return
        with call.lock:
            if not call.answered:
                call.pending.append(action)
                return
            media = call.leg.media
            if media is None or call.leg.ended:
                return
            self._clear_gather(call)
            self._cancel_hold_timer(call)
            clips = self._prompt_clips(action, media.payload_type)
            if isinstance(action, Gather):
                gather = GatherState(action)
                call.gather = gather
                # A queued caller's announcement (position, wait, callback offer): music resumes after it.
                media.set_background(self._music(media.payload_type) if call.queued else None)
                media.play(clips, on_played=lambda: self._gather_prompts_done(call, gather))
                if call.typeahead:
                    ahead, call.typeahead = call.typeahead, ""
                    for digit in ahead:
                        self._gather_digit(call, gather, digit)
            elif isinstance(action, Enqueue):
                call.queued = True
                media.set_background(self._music(media.payload_type))
                media.play(clips, on_played=lambda: self._schedule_hold_message(call))
            elif isinstance(action, Transfer):
                media.play(clips, on_played=lambda: self._blind_transfer(call, action.number))
            elif isinstance(action, RequestCallback | Hangup):
                media.set_background(None)
                media.play(clips, on_played=lambda: self.hangup(call_id))
            else:
                media.play(clips)

    def _prompt_clips(self, action: Action, payload_type: int) -> list[EncodedClip]:
        clips = []
        for prompt in action.prompts:
            path = self.prompts_dir / f"{prompt.id}.wav"
            try:
                clips.append(self.clips.get(path, payload_type))
            except (OSError, ValueError):
                log.warning("prompt %s has no usable WAV in %s; skipped", prompt.id, self.prompts_dir)
        return clips

    def _music(self, payload_type: int) -> EncodedClip:
        clip = self._hold_music.get(payload_type)
        if clip is None:
            if self._hold_music_path:
                clip = self.clips.get(self._hold_music_path, payload_type)
            else:
                shipped = self.prompts_dir / "hold_music.wav"
                if shipped.exists():
                    clip = self.clips.get(shipped, payload_type)
                else:
                    # A soft two-note chime, 4 s, so a waiting caller never hears dead air.
                    pcm = tone_linear16((440.0, 660.0), 1.0, 0.12) + bytes(16000) + tone_linear16(
                        (392.0, 587.0), 1.0, 0.12) + bytes(16000)
                    clip = EncodedClip("hold_music", payload_type,
                                       tuple(encode(f, payload_type) for f in split_frames(pcm)))
            self._hold_music[payload_type] = clip
        return clip

    def _schedule_hold_message(self, call: CallerCall) -> None:
        if self.hold_message_every <= 0:
            return
        path = self.prompts_dir / "hold_message.wav"

        def announce() -> None:
            with call.lock:
                media = call.leg.media
                if call.leg.ended or call.agent is not None or media is None or media.playing:
                    return
                try:
                    clip = self.clips.get(path, media.payload_type)
                except (OSError, ValueError):
                    return
                media.play([clip], on_played=lambda: self._schedule_hold_message(call))

        call.hold_timer = self.media.call_later(self.hold_message_every, announce)

    def _cancel_hold_timer(self, call: CallerCall) -> None:
        if call.hold_timer is not None:
            call.hold_timer()
            call.hold_timer = None

    # ---- DTMF gathering -----------------------------------------------------------------------
    def _on_dtmf(self, call_id: str, digit: str) -> None:
        call = self.calls.get(call_id)
        if call is None:
            return
        with call.lock:
            gather = call.gather
            if gather is None or gather.done:
                if len(call.typeahead) < TYPEAHEAD_LIMIT:
                    call.typeahead += digit
                return
            self._gather_digit(call, gather, digit)

    def _gather_digit(self, call: CallerCall, gather: GatherState, digit: str) -> None:
        action = gather.action
        media = call.leg.media
        if media is not None and media.playing:
            media.stop_playback()  # barge-in
        if not gather.started:
            gather.started = True
        if action.terminator and digit == action.terminator:
            self._finish_gather(call, gather)
            return
        gather.digits += digit
        if len(gather.digits) >= action.max_digits:
            self._finish_gather(call, gather)
            return
        self._restart_gather_timer(call, gather)

    def _gather_prompts_done(self, call: CallerCall, gather: GatherState) -> None:
        with call.lock:
            if gather.done or call.gather is not gather:
                return
            gather.started = True
            self._restart_gather_timer(call, gather)

    def _restart_gather_timer(self, call: CallerCall, gather: GatherState) -> None:
        if gather.cancel_timer is not None:
            gather.cancel_timer()
        gather.cancel_timer = self.media.call_later(gather.action.timeout_seconds,
                                                    lambda: self._gather_timeout(call, gather))

    def _gather_timeout(self, call: CallerCall, gather: GatherState) -> None:
        with call.lock:
            if gather.done or call.gather is not gather:
                return
            self._finish_gather(call, gather)

    def _finish_gather(self, call: CallerCall, gather: GatherState) -> None:
        gather.done = True
        if gather.cancel_timer is not None:
            gather.cancel_timer()
        call.gather = None
        if gather.digits and len(gather.digits) >= gather.action.min_digits:
            self._publish(DigitsReceived(call.call_id, digits=gather.digits))
        else:
            self._publish(InputTimedOut(call.call_id))

    def _clear_gather(self, call: CallerCall) -> None:
        if call.gather is not None:
            call.gather.done = True
            if call.gather.cancel_timer is not None:
                call.gather.cancel_timer()
            call.gather = None

    # ---- ending calls -------------------------------------------------------------------------
    def hangup(self, call_id: str) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            self._hangup(call)

    def _hangup(self, call: CallerCall, by: str = "platform", cause: str = "normal") -> None:
        """Our BYE (or 480 before the answer); ``by="caller"`` when they vanished (no RTP)."""
        with call.lock:
            if call.leg.ended:
                return
            call.leg.ended = True
            answered = call.answered
        if answered:
            self._send_in_dialog(call.leg, "BYE")
        elif call.callback is not None:
            if self._callback_hangup(call):  # the customer is not connected yet: CANCEL their INVITE
                return  # the agent ended the attempt: CallbackUnanswered("agent-ended"), not CallHungUp
        else:
            call.cancelled = True
            self._send(build_response(call.invite, 480, "Temporarily Unavailable", to_tag=call.leg.local_tag),
                       call.source)
        self._end_call(call, by=by, cause=cause)

    def _end_call(self, call: CallerCall, by: str, cause: str) -> None:
        self.stop_supervising(call.call_id)  # before the caller's media closes: BYE the supervisor
        with call.lock:
            self._clear_gather(call)
            self._cancel_hold_timer(call)
            if call.grace_timer is not None:
                call.grace_timer()
            agent, consult = call.agent, call.consult
            call.agent = call.consult = None
            media, call.leg.media = call.leg.media, None
        if agent is not None:
            self._drop_agent_leg(agent)
        if consult is not None:
            self._drop_agent_leg(consult)
        if media is not None:
            media.close()
        with self._lock:
            if self.calls.pop(call.call_id, None) is None:
                return
            # Keep the SIP Call-ID mapped briefly so retransmitted BYE/CANCEL still get answers.
            self.media.call_later(32.0, lambda: self._forget_sip(call.leg.sip_call_id, call))
        self._publish(CallHungUp(call.call_id, by=by, cause=cause))

    def _forget_sip(self, sip_call_id: str, owner: object) -> None:
        with self._lock:
            if self._by_sip.get(sip_call_id) is owner:
                del self._by_sip[sip_call_id]

    # ---- in-dialog requests we send -----------------------------------------------------------
    def _contact_header(self) -> str:
        user = self.settings.username or "callcentre"
        return f"Contact: <sip:{user}@{self.address[0]}:{self.address[1]}>"

    def _via(self, branch: str | None = None) -> tuple[str, str]:
        branch = branch or "z9hG4bK" + new_tag(16)
        return f"Via: SIP/2.0/UDP {self.address[0]}:{self.address[1]};branch={branch};rport", branch

    def _send_in_dialog(self, leg: Leg, method: str) -> None:
        leg.cseq += 1
        via, _ = self._via()
        lines = [
            f"{method} {leg.remote_uri} SIP/2.0",
            via,
            "Max-Forwards: 70",
            *[f"Route: {r}" for r in leg.routes],
            f"From: {leg.local_header}",
            f"To: {leg.remote_header}",
            f"Call-ID: {leg.sip_call_id}",
            f"CSeq: {leg.cseq} {method}",
            self._contact_header(),
            "User-Agent: callcentre (pyVoIP 1.6.8)",
            "Content-Length: 0",
        ]
        target = host_port_of(uri_of(leg.routes[0])) if leg.routes else leg.remote
        self._send(("\r\n".join(lines) + "\r\n\r\n").encode(), target)

    # ---- registration -------------------------------------------------------------------------
    def _register(self, expires: int | None = None) -> None:
        client = self.client
        if expires is not None:
            client.default_expires = expires
        request = client.gen_first_response(deregister=expires == 0)
        self._register_call_id = _header_value(request, "Call-ID")
        self._send(request.encode(), (client.server, client.port))

        def retry() -> None:
            if self._running and not self.registered.is_set():
                self._register()

        if expires != 0:
            self._register_cancel = self.media.call_later(5.0, retry)

    def _on_register_response(self, msg: RawSip) -> None:
        client = self.client
        if msg.status in (401, 407):
            if not self.settings.username:
                log.error("registrar asks for authentication but sip.username is empty")
                return
            try:
                challenge = PYVOIP_SIP.SIPMessage(_pyvoip_safe(msg))
                request = client.gen_register(challenge)
            except Exception:
                log.exception("could not answer the registrar's challenge")
                return
            self._send(request.encode(), (client.server, client.port))
        elif 200 <= msg.status < 300:
            if client.default_expires == 0:
                self.registered.clear()
                return
            self.registered.set()
            expires = client.default_expires
            m = msg.get("expires")
            if m.isdigit():
                expires = int(m)
            if self._register_cancel is not None:
                self._register_cancel()
            self._register_cancel = self.media.call_later(max(5.0, expires * 0.8), self._reregister)
            log.info("registered to %s:%s", client.server, client.port)
        elif msg.status >= 300:
            log.error("registrar refused registration with %s", msg.status)

    def _reregister(self) -> None:
        if self._running:
            self.registered.clear()
            self._register()


def _header_value(request: str, name: str) -> str:
    for line in request.split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def _pyvoip_safe(msg: RawSip) -> bytes:
    """Re-serialise headers the way pyVoIP's parser expects (``Name: value``, no body)."""
    lines = [msg.start_line] + [f"{n}: {v}" for n, v in msg.headers if n.lower() != "content-type"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def build_sip_backend(settings: Settings) -> SipBackend:
    """Factory used by ``callcentre.bootstrap`` (``callcentre serve --backend sip``)."""
    from callcentre.bootstrap import prompts_dir

    sip = settings.sip
    return SipBackend(sip, prompts_dir(settings), hold_message_every=sip.hold_message_every,
                      answer_delay=sip.answer_delay, rtp_timeout=sip.rtp_timeout)
