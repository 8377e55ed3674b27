"""Agent legs: ring the agent's SIP contact, bridge caller↔agent audio, hold, transfer, hang-ups.

A mixin of :class:`telephony.sip.SipBackend` (it shares the backend's socket, media engine and
call table). We are the UAC here: INVITE with our own RTP port; 1xx waits; 2xx → ACK (through the
route set) and the two RTP sessions relay into each other; 3xx–6xx → ACK and ``AgentNoAnswer``; no
answer within ``ring_seconds`` → CANCEL and ``AgentNoAnswer`` while the caller stays on hold music,
so the router can offer the call again with its place kept.

Warm transfer (:class:`telephony.base.ConsultCapable`): a call may briefly have two agent legs,
``call.agent`` (the first agent) and ``call.consult`` (the second). While consulting, the caller
hears hold music and the two agent legs relay into each other; completing moves the caller's
bridge to the second agent and BYEs the first, cancelling ends the second leg and re-bridges the
caller to the first. The FIRST agent hanging up during the consultation hands the caller over, as PBXs
do ("attended transfer on hang-up"): a consulted agent already talking is bridged to the caller at once; a
ringing one gets the caller directly when they answer (the caller keeps the music meanwhile). Either way
``ConsultHandedOver`` tells the platform; a ringing one who never answers is an ``AgentNoAnswer`` and the
platform queues the caller again.

Callbacks (``telephony/sip_callback.py``) ring their agent through :meth:`_dial` too; the few places
where a callback differs (the agent answers before the customer is connected, hangs up while the
customer rings, or never answers) hand over to the ``_callback_*`` hooks.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from callcentre.domain.events import AgentAnswered, AgentNoAnswer, CallHungUp, ConsultHandedOver
from callcentre.settings import SipSettings
from telephony.audio import EncodedClip
from telephony.base import AgentEndpoint
from telephony.rtp_relay import MediaEngine, NoRtpPortError, RtpSession
from telephony.sdp import SdpError, build_sdp, parse_offer
from telephony.sip_message import RawSip, host_port_of, uri_of
from telephony.sip_state import Address, AgentLeg, CallerCall, Leg, new_tag

log = logging.getLogger(__name__)

AGENT_HANGUP_GRACE = 2.0
"""After the agent hangs up, the platform has this long to give the caller a new action (a survey)."""
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"


class AgentLegs:
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
        def _via(self, branch: str | None = None) -> tuple[str, str]: ...
        def _send_in_dialog(self, leg: Leg, method: str) -> None: ...
        def _contact_header(self) -> str: ...
        def _music(self, payload_type: int) -> EncodedClip: ...
        def _cancel_hold_timer(self, call: CallerCall) -> None: ...
        def _clear_gather(self, call: CallerCall) -> None: ...
        def _forget_sip(self, sip_call_id: str, owner: object) -> None: ...
        def hangup(self, call_id: str) -> None: ...
        def _callback_agent_answered(self, call: CallerCall, agent: AgentLeg) -> None: ...
        def _callback_discard(self, call: CallerCall) -> None: ...
        def _callback_agent_left(self, call: CallerCall) -> None: ...
        def _supervisor_answered(self, call: CallerCall, leg: AgentLeg) -> None: ...
        def _supervisor_gone(self, leg: AgentLeg) -> None: ...
        def stop_supervising(self, call_id: str) -> None: ...

    def connect_agent(self, call_id: str, agent: AgentEndpoint, ring_seconds: float) -> None:
        call = self.calls.get(call_id)
        if call is None or call.leg.ended:
            self._publish(AgentNoAnswer(call_id, agent_id=agent.agent_id))
            return
        self._dial(call, agent.agent_id, self._agent_uri(agent.contact), ring_seconds, purpose="agent")

    def _agent_uri(self, contact: str) -> str:
        if contact.startswith(("sip:", "sips:")):
            return contact
        registrar = self.settings.registrar
        host = registrar if registrar else f"{self.address[0]}:{self.address[1]}"
        return f"sip:{contact}@{host}"

    def _dial(
        self, call: CallerCall, agent_id: int, uri: str, ring_seconds: float, purpose: str
    ) -> AgentLeg | None:
        """Ring ``uri`` for ``call``: an agent, a consulted agent, a transfer target or a supervisor
        (``telephony/supervision.py`` keeps that leg; it is neither ``call.agent`` nor ``call.consult``)."""
        caller_media = call.leg.media
        if caller_media is None:
            return None
        try:
            media = self.media.open_session(caller_media.payload_type, 101)
        except NoRtpPortError:
            if purpose != "supervisor":
                self._publish(AgentNoAnswer(call.call_id, agent_id=agent_id))
            return None
        if purpose == "agent":
            self._tap_agent(call.call_id, media)
        target = host_port_of(uri)
        if self.settings.mode == "registered" and self.settings.registrar:
            target = host_port_of(self.settings.registrar)  # the proxy knows where the agent registered
        agent_leg = self._outgoing_leg(call.call_id, agent_id, uri, target, media, purpose)
        with call.lock:
            old = None
            if purpose == "consult":
                old, call.consult = call.consult, agent_leg
            elif purpose != "supervisor":
                old, call.agent = call.agent, agent_leg
            if old is not None:
                self._drop_agent_leg(old)
        with self._lock:
            self._by_sip[agent_leg.leg.sip_call_id] = agent_leg
        agent_leg.cancel_timer = self.media.call_later(
            ring_seconds, lambda: self._agent_ring_timeout(agent_leg))
        self._send_invite(agent_leg)
        return agent_leg

    def _outgoing_leg(
        self, call_id: str, agent_id: int, uri: str, target: Address, media: RtpSession, purpose: str
    ) -> AgentLeg:
        """A new dialog we start (agent, consulted agent, transfer target or callback customer) and its INVITE."""
        sip_call_id = f"{new_tag(20)}@{self.address[0]}"
        local_tag = new_tag()
        leg = Leg(sip_call_id, local_tag, target, uri,
                  local_header=f"<sip:callcentre@{self.address[0]}:{self.address[1]}>;tag={local_tag}",
                  remote_header=f"<{uri}>", cseq=1, media=media)
        invite, branch = self._build_invite(leg)
        return AgentLeg(call_id, agent_id, leg, invite, branch, purpose=purpose)

    def _build_invite(self, leg: Leg, extra: tuple[str, ...] = ()) -> tuple[bytes, str]:
        """The INVITE for ``leg`` at its current CSeq (a fresh branch each time: a new transaction)."""
        assert leg.media is not None
        media = leg.media
        via, branch = self._via()
        sdp = build_sdp(random.randint(1, 2**31), self.address[0], media.local_port, media.payload_type, 101)
        invite = "\r\n".join([
            f"INVITE {leg.remote_uri} SIP/2.0", via, "Max-Forwards: 70",
            f"From: {leg.local_header}", f"To: {leg.remote_header}", f"Call-ID: {leg.sip_call_id}",
            f"CSeq: {leg.cseq} INVITE", self._contact_header(), f"Allow: {ALLOW}", *extra,
            "User-Agent: callcentre (pyVoIP 1.6.8)", "Content-Type: application/sdp",
            f"Content-Length: {len(sdp)}",
        ]) + "\r\n\r\n" + sdp
        return invite.encode(), branch

    def _send_invite(self, agent: AgentLeg) -> None:
        """Send the leg's INVITE and keep resending it (Timer A) until any response."""
        target = agent.leg.remote
        self._send(agent.invite, target)
        invite = agent.invite
        self.media.call_later(0.5, lambda: self._retransmit_invite(agent, target, 0.5, invite))

    def _retransmit_invite(self, agent: AgentLeg, target: Address, interval: float, invite: bytes) -> None:
        """RFC 3261 Timer A: resend the INVITE (0.5 s, doubling) until any response; the ring timer ends it.
        A newer INVITE for the leg (re-sent with credentials) has its own timer: this one stops."""
        if agent.responded or agent.failed or agent.answered or agent.leg.ended or agent.invite is not invite:
            return
        self._send(invite, target)
        interval *= 2
        self.media.call_later(interval, lambda: self._retransmit_invite(agent, target, interval, invite))

    def _on_agent_invite_response(self, agent: AgentLeg, msg: RawSip, number: int) -> None:
        status = msg.status
        agent.responded = True
        if status < 200:
            return
        leg = agent.leg
        if 200 <= status < 300:
            self._establish_dialog(leg, msg)
            self._send_ack(agent, msg, number)
            if agent.answered:
                return  # retransmitted 200
            if agent.failed or leg.ended:
                self._send_in_dialog(leg, "BYE")  # answered after we gave up
                return
            agent.answered = True
            if agent.cancel_timer is not None:
                agent.cancel_timer()
            try:
                offer = parse_offer(msg.body.decode("utf-8", errors="replace"))
            except SdpError:
                offer = None
            call = self.calls.get(agent.call_id)
            if offer is None or call is None or leg.media is None:
                self._send_in_dialog(leg, "BYE")
                self._agent_failed(agent)
                return
            leg.media.set_remote(offer.address, offer.port)
            pt = offer.choose_audio()
            if pt is not None:
                leg.media.payload_type = pt
            handed_over = None
            if agent.purpose == "supervisor":
                self._supervisor_answered(call, agent)
                return
            if agent.purpose == "consult":
                handed_over = self._bridge_consult(call, agent)
            elif call.callback is not None and not call.answered:
                self._callback_agent_answered(call, agent)  # ringback, AgentAnswered, then dial the customer
                return
            else:
                self._bridge(call, agent)
            if agent.purpose in ("agent", "consult"):
                self._publish(AgentAnswered(agent.call_id, agent_id=agent.agent_id))
            if handed_over is not None:
                self._publish(handed_over)
            return
        # 3xx-6xx: ACK it (same branch, hop by hop) and give the call back to the queue.
        self._send_ack(agent, msg, number, failure=True)
        if agent.cancel_timer is not None:
            agent.cancel_timer()
        self._agent_failed(agent)

    def _establish_dialog(self, leg: Leg, msg: RawSip) -> None:
        """The dialog our INVITE created (its 2xx): remote tag, target (Contact) and route set."""
        leg.remote_header = msg.get("to")
        contact = uri_of(msg.get("contact"))
        if contact:
            leg.remote_uri = contact
        leg.routes = list(reversed(msg.get_all("record-route")))
        if not leg.routes and self.settings.mode == "direct" and contact:
            leg.remote = host_port_of(contact)

    def _send_ack(self, agent: AgentLeg, msg: RawSip, number: int, failure: bool = False) -> None:
        leg = agent.leg
        via, _ = self._via(agent.branch if failure else None)
        uri = leg.remote_uri if not failure else uri_of(leg.remote_header)
        lines = [
            f"ACK {uri} SIP/2.0", via, "Max-Forwards: 70",
            *([] if failure else [f"Route: {r}" for r in leg.routes]),
            f"From: {leg.local_header}", f"To: {msg.get('to')}", f"Call-ID: {leg.sip_call_id}",
            f"CSeq: {number} ACK", "Content-Length: 0",
        ]
        target = leg.remote
        if not failure and leg.routes:
            target = host_port_of(uri_of(leg.routes[0]))
        self._send(("\r\n".join(lines) + "\r\n\r\n").encode(), target)

    def _agent_ring_timeout(self, agent: AgentLeg) -> None:
        if agent.answered or agent.failed:
            return
        self._send_cancel(agent)
        self._agent_failed(agent)

    def _send_cancel(self, agent: AgentLeg) -> None:
        """CANCEL our ringing INVITE to the agent (same branch as the INVITE, RFC 3261 §9.1)."""
        via, _ = self._via(agent.branch)
        leg = agent.leg
        cancel = "\r\n".join([
            f"CANCEL {leg.remote_uri} SIP/2.0", via, "Max-Forwards: 70",
            f"From: {leg.local_header}", f"To: {leg.remote_header}", f"Call-ID: {leg.sip_call_id}",
            f"CSeq: {leg.cseq} CANCEL", "Content-Length: 0",
        ]) + "\r\n\r\n"
        self._send(cancel.encode(), leg.remote)

    def _agent_failed(self, agent: AgentLeg) -> None:
        if agent.failed:
            return
        agent.failed = True
        agent.leg.ended = True
        if agent.purpose == "supervisor":
            if agent.leg.media is not None:
                agent.leg.media.close()
                agent.leg.media = None
            self._supervisor_gone(agent)
            return
        call = self.calls.get(agent.call_id)
        if call is not None:
            with call.lock:
                if call.consult is agent:
                    # The caller stays on hold music and the first agent's leg stays up: they can return.
                    # (If the first agent had hung up, nobody has the caller: they wait in the queue again.)
                    call.consult = None
                    if agent.handover_from is not None:
                        call.queued = True
                elif call.agent is agent:
                    call.agent = None
                    media = call.leg.media
                    if media is not None:
                        media.unbridge()
                        media.mute_output(False)
        if agent.leg.media is not None:
            agent.leg.media.close()
            agent.leg.media = None
        self.media.call_later(32.0, lambda: self._forget_sip(agent.leg.sip_call_id, agent))
        if agent.purpose in ("agent", "consult"):
            self._publish(AgentNoAnswer(agent.call_id, agent_id=agent.agent_id))
            if call is not None and call.callback is not None and agent.purpose == "agent":
                self._callback_discard(call)  # the customer was never dialled: the attempt just ends
        elif call is not None:
            self.hangup(call.call_id)  # blind transfer target unreachable: nothing else to offer

    def _bridge(self, call: CallerCall, agent: AgentLeg) -> None:
        caller_media, agent_media = call.leg.media, agent.leg.media
        if caller_media is None or agent_media is None:
            return
        with call.lock:
            self._cancel_hold_timer(call)
            self._clear_gather(call)
            caller_media.stop_playback()
            caller_media.set_background(None)
            if call.on_hold:
                agent_media.set_background(None)
                caller_media.set_background(self._music(caller_media.payload_type))
                return
            caller_media.bridge(agent_media)
            agent_media.bridge(caller_media)
            call.queued = False

    def hold(self, call_id: str, on: bool) -> None:
        call = self.calls.get(call_id)
        if call is None:
            return
        self.stop_supervising(call_id)  # hold changes the relay the supervisor's mixer joined
        with call.lock:
            if call.consult is not None:
                return  # consulting: the caller is already held; complete or cancel ends it
            call.on_hold = on
            if call.callback is not None and not call.answered:
                return  # the agent hears ringback; the customer gets music when they answer
            agent = call.agent
            caller_media = call.leg.media
            if caller_media is None:
                return
            if agent is None or not agent.answered or agent.leg.media is None:
                caller_media.set_background(self._music(caller_media.payload_type) if on else None)
                return
            agent_media = agent.leg.media
            if on:
                caller_media.unbridge()
                agent_media.unbridge()
                caller_media.set_background(self._music(caller_media.payload_type))
                agent_media.set_background(None)
            else:
                caller_media.set_background(None)
                caller_media.bridge(agent_media)
                agent_media.bridge(caller_media)

    def _agent_hung_up(self, agent: AgentLeg) -> None:
        agent.leg.ended = True
        call = self.calls.get(agent.call_id)
        if agent.purpose == "supervisor":
            self._supervisor_gone(agent)  # restores the caller↔agent relay before the media closes
        elif call is not None and call.agent is agent:
            self.stop_supervising(call.call_id)  # the agent left: the supervisor's leg ends too
        if agent.leg.media is not None:
            agent.leg.media.close()
            agent.leg.media = None
        if call is None:
            return
        if call.callback is not None and not call.answered and call.agent is agent:
            self._callback_agent_left(call)  # the customer is still ringing: CANCEL it, CallHungUp
            return
        handed_over: ConsultHandedOver | None = None
        with call.lock:
            if call.consult is agent:
                # The consulted agent left: the first agent still has the (held) caller and can return.
                call.consult = None
                first = call.agent
                if first is not None and first.leg.media is not None:
                    first.leg.media.unbridge()
                log.info("call %s: consulted agent %s hung up", call.call_id, agent.agent_id)
                return
            if call.agent is not agent:
                return
            consult = call.consult
            if agent.purpose == "agent" and consult is not None and not consult.failed and not consult.leg.ended:
                handed_over = self._hand_over(call, agent, consult)
        if handed_over is not None:
            log.info("call %s: agent %s hung up while consulting; handed over to agent %s",
                     call.call_id, agent.agent_id, handed_over.to_agent_id)
            self._publish(handed_over)
            return
        with call.lock:
            if call.agent is not agent:
                return
            call.agent = None
            media = call.leg.media
            if media is not None:
                media.unbridge()
                media.set_background(None)
            call.grace_timer = self.media.call_later(AGENT_HANGUP_GRACE, lambda: self._after_agent(call))
        self._publish(CallHungUp(call.call_id, by="agent" if agent.purpose == "agent" else "transfer"))

    def _after_agent(self, call: CallerCall) -> None:
        with call.lock:
            playing = call.leg.media is not None and call.leg.media.playing
            idle = call.gather is None and call.agent is None and not playing
        if idle:
            self.hangup(call.call_id)

    def _drop_agent_leg(self, agent: AgentLeg) -> None:
        if agent.leg.ended:
            return
        agent.leg.ended = True
        if agent.cancel_timer is not None:
            agent.cancel_timer()
        if agent.answered:
            self._send_in_dialog(agent.leg, "BYE")
        else:
            agent.failed = True
            self._send_cancel(agent)
        if agent.leg.media is not None:
            agent.leg.media.close()
            agent.leg.media = None

    def _blind_transfer(self, call: CallerCall, number: str) -> None:
        """Transfer to an outside number: dial it (via the registrar/proxy if any) and bridge."""
        if number.startswith("sip:"):
            uri = number
        elif self.settings.registrar:
            uri = f"sip:{number}@{self.settings.registrar}"
        else:
            log.warning("call %s: transfer needs sip.registrar (a proxy/trunk) to reach outside numbers",
                        call.call_id)
            self.hangup(call.call_id)
            return
        self._dial(call, 0, uri, 30.0, purpose="transfer")

    def transfer_to_agent(self, call_id: str, agent: AgentEndpoint, ring_seconds: float) -> None:
        """Agent-to-agent blind transfer: drop the current agent leg, ring the new one, caller on hold."""
        call = self.calls.get(call_id)
        if call is None:
            return
        self.stop_supervising(call_id)
        with call.lock:
            old = call.agent
            call.agent = None
            media = call.leg.media
            if media is not None:
                media.unbridge()
                media.set_background(self._music(media.payload_type))
        if old is not None:
            self._drop_agent_leg(old)
        self.connect_agent(call_id, agent, ring_seconds)

    # ---- warm transfer: consultation (telephony.base.ConsultCapable) ---------------------------

    def consult(self, call_id: str, agent: AgentEndpoint, ring_seconds: float) -> None:
        """Hold the caller, keep the first agent's leg up and ring ``agent``; on answer the two agents talk."""
        call = self.calls.get(call_id)
        if call is None or call.leg.ended:
            self._publish(AgentNoAnswer(call_id, agent_id=agent.agent_id))
            return
        self.stop_supervising(call_id)
        with call.lock:
            first = call.agent
            if first is None or not first.answered or first.leg.media is None:
                first = None
            else:
                call.on_hold = True
                caller_media, first_media = call.leg.media, first.leg.media
                if caller_media is not None:
                    caller_media.unbridge()
                    caller_media.set_background(self._music(caller_media.payload_type))
                first_media.unbridge()
                first_media.set_background(None)
        if first is None:
            # Nobody to consult with (the first agent is gone): an ordinary hold-and-ring.
            self.hold(call_id, True)
            self.connect_agent(call_id, agent, ring_seconds)
            return
        self._dial(call, agent.agent_id, self._agent_uri(agent.contact), ring_seconds, purpose="consult")

    def _bridge_consult(self, call: CallerCall, consult: AgentLeg) -> ConsultHandedOver | None:
        """The consulted agent answered: talk to the first agent, or (the first agent hung up while it
        rang) take the caller. Returns the handover to publish after ``AgentAnswered``, if any."""
        with call.lock:
            first = call.agent
            second_media = consult.leg.media
            if call.consult is not consult or second_media is None:
                return None
            if consult.handover_from is not None:
                return self._hand_over(call, None, consult)
            if first is None or first.leg.media is None:
                second_media.set_background(None)  # the first agent left while it rang: wait for cancel
                return None
            first.leg.media.bridge(second_media)
            second_media.bridge(first.leg.media)
            return None

    def _hand_over(self, call: CallerCall, first: AgentLeg | None, second: AgentLeg) -> ConsultHandedOver:
        """Under ``call.lock``: the first agent's leg is gone (``first`` just hung up, or None: it hung up
        earlier); the consulted agent takes the caller now if answered, else when they answer."""
        from_agent = first.agent_id if first is not None else second.handover_from
        assert from_agent is not None
        if first is not None and call.agent is first:
            call.agent = None
        # The hold was the first agent's: the consulted agent's answer bridges straight to the caller.
        call.on_hold = False
        if not second.answered or second.leg.media is None:
            second.handover_from = from_agent  # the caller keeps the hold music until they answer
            return ConsultHandedOver(call.call_id, from_agent_id=from_agent, to_agent_id=second.agent_id,
                                     answered=False)
        call.agent, call.consult = second, None
        second.purpose = "agent"  # from now on its hang-up ends the call like any agent's
        second.handover_from = None
        self._tap_agent(call.call_id, second.leg.media)
        second.leg.media.unbridge()
        self._bridge(call, second)
        return ConsultHandedOver(call.call_id, from_agent_id=from_agent, to_agent_id=second.agent_id)

    def complete_consult(self, call_id: str) -> None:
        """Bridge the caller to the consulted agent and end the first agent's leg (our BYE)."""
        call = self.calls.get(call_id)
        if call is None:
            return
        first: AgentLeg | None = None
        with call.lock:
            second = call.consult
            if second is None or not second.answered or second.leg.media is None:
                log.warning("call %s: no answered consultation to complete; returning the caller", call_id)
                done = False
            else:
                first, call.agent, call.consult = call.agent, second, None
                second.purpose = "agent"  # from now on its hang-up ends the call like any agent's
                self._tap_agent(call_id, second.leg.media)
                if first is not None and first.leg.media is not None:
                    first.leg.media.unbridge()
                call.on_hold = False
                second.leg.media.unbridge()
                self._bridge(call, second)
                done = True
        if not done:
            self.cancel_consult(call_id)
            return
        if first is not None:
            self._drop_agent_leg(first)

    def cancel_consult(self, call_id: str) -> None:
        """End the consulted agent's leg (CANCEL or BYE) and give the caller back to the first agent."""
        call = self.calls.get(call_id)
        if call is None:
            return
        with call.lock:
            second, call.consult = call.consult, None
            first = call.agent
            if second is not None and second.leg.media is not None:
                second.leg.media.unbridge()
            if first is not None and first.leg.media is not None:
                first.leg.media.unbridge()
        if second is not None:
            self._drop_agent_leg(second)
        self.hold(call_id, False)

    def _tap_agent(self, call_id: str, media: RtpSession) -> None:
        """Recording hears the agent who talks to the caller (not a consultation between agents)."""
        sink = self.audio_sink
        if sink is not None:
            media.on_audio = lambda pcm: sink(call_id, "agent", pcm)
