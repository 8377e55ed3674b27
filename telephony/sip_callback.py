"""Callback dialling on the SIP endpoint (:class:`telephony.base.CallbackCapable`): agent first, then the customer.

A mixin of :class:`telephony.sip.SipBackend`, next to :class:`telephony.agent_legs.AgentLegs`, whose
agent-leg code it reuses (the agent is rung exactly as for a live caller). The callback becomes a
:class:`~telephony.sip_state.CallerCall` under the ORIGINAL call's id whose ``leg`` is our dialog to the
customer (we are the UAC on both legs), so once the customer answers everything that works on an inbound
call works on it: ``hold``, ``hangup``, transfers, the caller/agent audio taps that feed the recording,
the RTP watchdog, BYE from either side.

1. :meth:`call_back` rings the agent (``_dial``). No answer → ``AgentNoAnswer`` and the attempt is over.
2. The agent answers → ``AgentAnswered``; the agent hears ringback (425 Hz, 1 s on / 4 s off) and we
   INVITE ``sip:NUMBER@<sip.outbound_proxy>`` (or the registrar in ``registered`` mode), answering a
   digest challenge (401/407) once with the account's credentials.
3. 2xx → ACK, the two legs relay into each other, ``CallbackAnswered``. 486/600 → ``busy``; 408/503/504,
   no response at all (within :data:`NO_RESPONSE_SECONDS`), or a send error → ``failed``; any other
   3xx–6xx → ``rejected``; ringing longer than ``customer_ring_seconds`` → CANCEL and ``no-answer``.
   Unanswered: the agent's leg gets our BYE and ``CallbackUnanswered(reason)`` is published (never
   ``CallHungUp``).
4. The agent ending the attempt while the customer rings — ``hangup(call_id)`` from the console, or a BYE
   from the agent's phone → CANCEL to the customer (at once if they sent a provisional response, else
   when they do; the 487 is ACKed), our BYE to the agent's leg (if still up) and
   ``CallbackUnanswered(reason="agent-ended")``, never ``CallHungUp``.

The customer's number is never logged (call ids and reasons only).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from callcentre.domain.events import AgentAnswered, AgentNoAnswer, CallbackAnswered, CallbackUnanswered
from callcentre.settings import SipSettings
from telephony.audio import EncodedClip, encode, split_frames, tone_linear16
from telephony.base import AgentEndpoint
from telephony.rtp_relay import MediaEngine, NoRtpPortError, RtpSession
from telephony.sdp import SdpError, parse_offer
from telephony.sip_digest import digest_header
from telephony.sip_message import RawSip, SipSyntaxError, host_port_of, parse, uri_of
from telephony.sip_state import Address, AgentLeg, CallbackDial, CallerCall, Leg

log = logging.getLogger(__name__)

BUSY = frozenset({486, 600})
UNREACHABLE = frozenset({408, 503, 504})
"""Request timeout, service unavailable, server time-out: the network (or the trunk) failed, not the customer."""
PCMU = 0
NO_RESPONSE_SECONDS = 8.0
"""No response at all (not even 100 Trying) this long after the INVITE, resent at 0.5, 1, 2 and 4 s: the
proxy or trunk is unreachable (an ICMP error is not visible on the unconnected SIP socket). Shorter than
RFC 3261's Timer B (32 s) so the agent does not listen to ringback for nothing; a provisional response
arriving later still gets its CANCEL."""
CALLER_LEG_WAIT = 30.0
"""How long a callback waits for the original caller's leg (goodbye prompt, then our BYE) to end."""


def callback_reason(status: int) -> str:
    """The ``CallbackUnanswered`` reason for a final failure response to our INVITE to the customer."""
    if status in BUSY:
        return "busy"
    if status in UNREACHABLE:
        return "failed"
    return "rejected"


@functools.lru_cache(maxsize=4)
def ringback_clip(payload_type: int) -> EncodedClip:
    """European ringing tone (ETSI TR 101 041 / ITU-T E.180): 425 Hz, 1 s on, 4 s off, looped."""
    pcm = tone_linear16((425.0,), 1.0, 0.2) + bytes(4 * 16000)
    return EncodedClip("ringback", payload_type, tuple(encode(f, payload_type) for f in split_frames(pcm)))


_BRANCH = re.compile(r"branch=([^;,\s]+)")
_DIGEST_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


def digest_authorization(
    challenge: RawSip, method: str, uri: str, username: str, password: str, cnonce: str | None = None
) -> str | None:
    """The ``Authorization`` / ``Proxy-Authorization`` header answering a 401/407 (RFC 2617 MD5, with or
    without ``qop=auth``); None when the challenge is not a usable Digest one.

    The hardened pyVoIP client (``telephony/pyvoip_patches/client.py``) answers challenges for REGISTER
    only and parses with its own message class; both compute with :func:`telephony.sip_digest.digest_header`."""
    header = "www-authenticate" if challenge.status == 401 else "proxy-authenticate"
    value = challenge.get(header)
    if not value.lower().startswith("digest"):
        return None
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _DIGEST_PARAM.finditer(value[6:])}
    if not params.get("nonce") or params.get("algorithm", "MD5").upper() != "MD5":
        return None
    return digest_header(challenge.status, params, method=method, uri=uri, username=username, password=password,
                         cnonce=cnonce)


class CallbackDialling:
    customer_no_response_seconds: float = NO_RESPONSE_SECONDS
    settings: SipSettings
    address: Address
    media: MediaEngine
    calls: dict[str, CallerCall]
    _by_sip: dict[str, CallerCall | AgentLeg]
    _lock: threading.RLock
    audio_sink: Callable[[str, str, bytes], None] | None

    if TYPE_CHECKING:
        def _publish(self, event: object) -> None: ...
        def _send(self, data: bytes, addr: Address) -> None: ...
        def _send_in_dialog(self, leg: Leg, method: str) -> None: ...
        def _forget_sip(self, sip_call_id: str, owner: object) -> None: ...
        def _end_call(self, call: CallerCall, by: str, cause: str) -> None: ...
        def _agent_uri(self, contact: str) -> str: ...
        def _dial(self, call: CallerCall, agent_id: int, uri: str, ring_seconds: float, purpose: str) -> None: ...
        def _outgoing_leg(self, call_id: str, agent_id: int, uri: str, target: Address, media: RtpSession,
                          purpose: str) -> AgentLeg: ...
        def _build_invite(self, leg: Leg, extra: tuple[str, ...] = ()) -> tuple[bytes, str]: ...
        def _send_invite(self, agent: AgentLeg) -> None: ...
        def _via(self, branch: str | None = None) -> tuple[str, str]: ...
        def _retransmit_invite(self, agent: AgentLeg, target: Address, interval: float, invite: bytes) -> None: ...
        def _send_ack(self, agent: AgentLeg, msg: RawSip, number: int, failure: bool = False) -> None: ...
        def _send_cancel(self, agent: AgentLeg) -> None: ...
        def _establish_dialog(self, leg: Leg, msg: RawSip) -> None: ...
        def _drop_agent_leg(self, agent: AgentLeg) -> None: ...
        def _bridge(self, call: CallerCall, agent: AgentLeg) -> None: ...

    # ---- the power --------------------------------------------------------------------------
    def call_back(
        self, call_id: str, number: str, agent: AgentEndpoint, ring_seconds: float, customer_ring_seconds: float
    ) -> None:
        """Ring ``agent``; when they answer, dial ``number`` and bridge (see the module docstring)."""
        self._call_back(call_id, number, agent, ring_seconds, customer_ring_seconds, 0.0)

    def _call_back(
        self, call_id: str, number: str, agent: AgentEndpoint, ring_seconds: float, customer_ring_seconds: float,
        waited: float,
    ) -> None:
        existing = self.calls.get(call_id)
        if existing is not None and existing.callback is not None:
            log.warning("call %s: a callback is already being dialled; agent %s not rung", call_id, agent.agent_id)
            self._publish(AgentNoAnswer(call_id, agent_id=agent.agent_id))
            return
        if existing is not None:
            # The caller who chose the callback is still hearing the goodbye before our BYE (an agent freed
            # up meanwhile): ring the agent once that leg is gone.
            if waited < CALLER_LEG_WAIT:
                self.media.call_later(0.5, lambda: self._call_back(
                    call_id, number, agent, ring_seconds, customer_ring_seconds, waited + 0.5))
                return
            log.error("call %s: the caller's own leg is still up %.0f s after the callback was due; not dialled",
                      call_id, waited)
            self._publish(AgentNoAnswer(call_id, agent_id=agent.agent_id))
            return
        uri = self._customer_uri(number)
        try:
            media = self.media.open_session(PCMU, 101)
        except NoRtpPortError:
            log.error("call %s: no free RTP port for the callback", call_id)
            self._publish(CallbackUnanswered(call_id, agent_id=agent.agent_id, reason="failed"))
            return
        sink = self.audio_sink
        if sink is not None:
            media.on_audio = lambda pcm: sink(call_id, "caller", pcm)  # the customer is the call's caller
        # No route to customers: the agent is still rung first, so the attempt is one the router counts
        # (AgentAnswered, then CallbackUnanswered "failed"), and the INVITE is never sent anywhere.
        target = host_port_of(uri) if uri is not None else ("unroutable.invalid", 9)
        customer = self._outgoing_leg(call_id, agent.agent_id, uri or "sip:callback@unroutable.invalid", target,
                                      media, purpose="customer")
        try:
            invite = parse(customer.invite)
            offer = parse_offer(customer.invite.split(b"\r\n\r\n", 1)[1].decode())
        except (SipSyntaxError, SdpError):  # our own INVITE: cannot happen unless the builder breaks
            media.close()
            log.exception("call %s: could not build the callback INVITE", call_id)
            self._publish(CallbackUnanswered(call_id, agent_id=agent.agent_id, reason="failed"))
            return
        call = CallerCall(call_id, customer.leg, invite, target, offer)
        call.callback = CallbackDial(customer, customer_ring_seconds, routable=uri is not None)
        with self._lock:
            self.calls[call_id] = call
            self._by_sip[customer.leg.sip_call_id] = call
        log.info("call %s: callback: ringing agent %s", call_id, agent.agent_id)
        self._dial(call, agent.agent_id, self._agent_uri(agent.contact), ring_seconds, purpose="agent")
        if call.agent is None:  # no RTP port for the agent: _dial already said AgentNoAnswer
            self._callback_discard(call)

    def _customer_uri(self, number: str) -> str | None:
        if number.startswith(("sip:", "sips:")):
            return number
        proxy = self.settings.outbound_proxy.strip()
        if not proxy and self.settings.mode == "registered":
            proxy = self.settings.registrar.strip()
        if not proxy:
            return None
        return f"sip:{number}@{proxy}"

    # ---- hooks called by the agent-leg code ---------------------------------------------------
    def _callback_agent_answered(self, call: CallerCall, agent: AgentLeg) -> None:
        """The agent picked up: they hear ringback while we dial the customer."""
        cb = call.callback
        assert cb is not None
        with call.lock:
            agent_media = agent.leg.media
            if agent_media is not None:
                agent_media.set_background(ringback_clip(agent_media.payload_type))
        self._publish(AgentAnswered(call.call_id, agent_id=agent.agent_id))
        self._dial_customer(call, cb)

    def _dial_customer(self, call: CallerCall, cb: CallbackDial) -> None:
        customer = cb.customer
        with call.lock:
            if cb.dialled or cb.outcome or call.leg.ended:
                return
            cb.dialled = True
        if not cb.routable:
            log.error("call %s: cannot dial the callback: set sip.outbound_proxy (host:port of a proxy or trunk), "
                      "or use sip.mode = registered with a registrar", call.call_id)
            customer.failed = True
            self._callback_unanswered(call, "failed")
            return
        customer.cancel_timer = self.media.call_later(cb.ring_seconds, lambda: self._customer_ring_timeout(call))
        if self.customer_no_response_seconds < cb.ring_seconds:
            self.media.call_later(self.customer_no_response_seconds, lambda: self._customer_silent(call))
        sock = getattr(self, "sock", None)
        if sock is None:
            self._send_invite(customer)
            return
        invite, target = customer.invite, customer.leg.remote
        try:
            sock.sendto(invite, target)  # sent here, not by _send_invite: a send error is an immediate failure
        except OSError as exc:
            log.warning("call %s: callback INVITE could not be sent (%s)", call.call_id, exc.strerror)
            self._callback_unanswered(call, "failed")
            return
        # Only Timer A's retransmissions from here: sending it again at once made the customer's side answer
        # twice (a second 401 on a challenged trunk, taken for a refusal).
        self.media.call_later(0.5, lambda: self._retransmit_invite(customer, target, 0.5, invite))

    def _callback_discard(self, call: CallerCall) -> None:
        """The agent never answered: close the unused customer leg; AgentNoAnswer was published."""
        cb = call.callback
        with call.lock:
            if cb is None or cb.outcome:
                return
            cb.outcome = "agent-no-answer"
            call.leg.ended = True
            media, call.leg.media = call.leg.media, None
            cb.customer.failed = True
        if media is not None:
            media.close()
        self._forget_callback(call)

    def _callback_agent_left(self, call: CallerCall) -> None:
        """The agent hung up their phone while the customer's phone rang: they ended the attempt."""
        with call.lock:
            call.agent = None  # their leg is already gone (their BYE): nothing to send them
        log.info("call %s: agent hung up while the callback rang", call.call_id)
        self._callback_unanswered(call, "agent-ended")

    def _callback_hangup(self, call: CallerCall) -> bool:
        """``hangup()`` before the customer answered. Once the agent answered (the customer is dialled)
        this is the agent ending the attempt: CANCEL, BYE the agent, ``CallbackUnanswered("agent-ended")``
        and True (the caller must not end the call as well: no ``CallHungUp``). Before that (the agent's
        phone still rings) nothing was dialled: CANCEL nothing, False (the call ends as before)."""
        cb = call.callback
        assert cb is not None
        agent = call.agent
        if cb.dialled or (agent is not None and agent.answered):
            self._callback_unanswered(call, "agent-ended")
            return True
        with call.lock:
            if not cb.outcome:
                cb.outcome = "hung-up"
        self._stop_customer(call, cb)
        return False

    def _stop_customer(self, call: CallerCall, cb: CallbackDial) -> None:
        customer = cb.customer
        if customer.cancel_timer is not None:
            customer.cancel_timer()
        already = customer.failed
        customer.failed = True
        if cb.dialled and customer.responded and not already and not call.answered:
            self._send_cancel(customer)  # RFC 3261 §9.1: only after a provisional response (else on it)

    # ---- the customer's answers --------------------------------------------------------------
    def _on_customer_invite_response(self, call: CallerCall, msg: RawSip, number: int) -> None:
        cb = call.callback
        assert cb is not None
        customer = cb.customer
        status = msg.status
        if number != customer.leg.cseq:
            # A late or retransmitted answer to an INVITE already replaced (re-sent with credentials): a final
            # one is ACKed again (RFC 3261 §17.1.1.2, on its own transaction's branch); nothing else changes.
            if status >= 300:
                self._send(self._stale_ack(customer, msg, number), customer.leg.remote)
            return
        first_response = not customer.responded
        customer.responded = True
        if status < 200:
            if first_response and customer.failed and not call.answered:
                self._send_cancel(customer)  # we gave up before any response: cancel now that we can
            return
        if status >= 300:
            self._send_ack(customer, msg, number, failure=True)
            if status in (401, 407) and self._resend_with_credentials(call, cb, msg):
                return
            if customer.failed or call.answered:
                return  # the 487 to our CANCEL, or a late answer
            if customer.cancel_timer is not None:
                customer.cancel_timer()
            customer.failed = True  # a final response: nothing left to CANCEL
            self._callback_unanswered(call, callback_reason(status))
            return
        self._customer_answered(call, cb, msg, number)

    def _stale_ack(self, customer: AgentLeg, msg: RawSip, number: int) -> bytes:
        leg = customer.leg
        found = _BRANCH.search(msg.get("via"))
        via, _ = self._via(found.group(1) if found else None)
        lines = [
            f"ACK {uri_of(leg.remote_header)} SIP/2.0", via, "Max-Forwards: 70",
            f"From: {leg.local_header}", f"To: {msg.get('to')}", f"Call-ID: {leg.sip_call_id}",
            f"CSeq: {number} ACK", "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _resend_with_credentials(self, call: CallerCall, cb: CallbackDial, msg: RawSip) -> bool:
        customer = cb.customer
        if cb.authenticated or customer.failed or not self.settings.username:
            return False
        auth = digest_authorization(msg, "INVITE", customer.leg.remote_uri, self.settings.username,
                                    self.settings.password)
        if auth is None:
            return False
        cb.authenticated = True
        leg = customer.leg
        leg.cseq += 1
        customer.invite, customer.branch = self._build_invite(leg, (auth,))
        customer.responded = False
        log.info("call %s: callback INVITE challenged (%s); re-sent with credentials", call.call_id, msg.status)
        self._send_invite(customer)
        return True

    def _customer_answered(self, call: CallerCall, cb: CallbackDial, msg: RawSip, number: int) -> None:
        customer = cb.customer
        leg = call.leg
        first = not customer.answered
        if first:
            self._establish_dialog(leg, msg)
        self._send_ack(customer, msg, number)
        if not first:
            return  # a retransmitted 200: ACKed again
        customer.answered = True
        if customer.cancel_timer is not None:
            customer.cancel_timer()
        try:
            offer = parse_offer(msg.body.decode("utf-8", errors="replace"))
        except SdpError:
            offer = None
        pt = offer.choose_audio() if offer is not None else None
        with call.lock:
            agent = call.agent
            late = customer.failed or leg.ended or cb.outcome != ""
            usable = offer is not None and pt is not None and leg.media is not None
            if not late and usable:
                cb.outcome = "answered"
                call.answered = call.acked = True
        if late:
            self._send_in_dialog(leg, "BYE")  # answered after we gave up (CANCEL crossed the 200)
            return
        if not usable:
            log.warning("call %s: the customer answered the callback without usable G.711 SDP", call.call_id)
            self._send_in_dialog(leg, "BYE")
            self._callback_unanswered(call, "failed", answered=True)
            return
        assert offer is not None and pt is not None and leg.media is not None
        call.offer = offer
        leg.media.set_remote(offer.address, offer.port)
        leg.media.payload_type = pt
        leg.media.last_received = time.monotonic()  # the RTP watchdog counts from the answer
        if agent is None or agent.leg.media is None:
            self._hangup_answered(call)
            return
        agent.leg.media.set_background(None)
        self._bridge(call, agent)
        log.info("call %s: callback answered; agent %s bridged", call.call_id, agent.agent_id)
        self._publish(CallbackAnswered(call.call_id, agent_id=agent.agent_id))

    def _hangup_answered(self, call: CallerCall) -> None:
        # The agent vanished between answering and the customer's 200: end it as a normal call.
        self._send_in_dialog(call.leg, "BYE")
        call.leg.ended = True
        self._end_call(call, by="agent", cause="normal")

    def _customer_ring_timeout(self, call: CallerCall) -> None:
        cb = call.callback
        if cb is None:
            return
        customer = cb.customer
        if customer.answered or customer.failed or cb.outcome:
            return
        reason = "no-answer" if customer.responded else "failed"
        self._callback_unanswered(call, reason)

    def _customer_silent(self, call: CallerCall) -> None:
        cb = call.callback
        if cb is None or cb.customer.responded or cb.customer.answered or cb.customer.failed or cb.outcome:
            return
        log.info("call %s: no response to the callback INVITE in %.0f s", call.call_id,
                 self.customer_no_response_seconds)
        self._callback_unanswered(call, "failed")

    def _callback_unanswered(self, call: CallerCall, reason: str, answered: bool = False) -> None:
        """End the attempt: CANCEL a still-ringing customer, BYE the agent, ``CallbackUnanswered``."""
        cb = call.callback
        assert cb is not None
        with call.lock:
            if cb.outcome and not answered:
                return
            cb.outcome = reason
            agent, call.agent = call.agent, None
        if not answered:
            self._stop_customer(call, cb)
        with call.lock:
            call.leg.ended = True
            media, call.leg.media = call.leg.media, None
        if agent is not None:
            self._drop_agent_leg(agent)  # BYE (it answered) or CANCEL
        if media is not None:
            media.close()
        self._forget_callback(call)
        agent_id = agent.agent_id if agent is not None else cb.customer.agent_id
        log.info("call %s: callback not answered (%s); agent %s released", call.call_id, reason, agent_id)
        self._publish(CallbackUnanswered(call.call_id, agent_id=agent_id, reason=reason))

    def _forget_callback(self, call: CallerCall) -> None:
        with self._lock:
            if self.calls.get(call.call_id) is call:
                del self.calls[call.call_id]
        # Keep the Call-ID mapped a while: the 487 to our CANCEL (or a late 200) still needs its ACK.
        self.media.call_later(32.0, lambda: self._forget_sip(call.leg.sip_call_id, call))
