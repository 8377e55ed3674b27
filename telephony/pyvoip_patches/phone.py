"""Hardened VoIPPhone / VoIPCall: immediate answer, CANCEL → 487, 404/488 hooks, correct BYE.

Stock 1.6.8 ``VoIPPhone``/``VoIPCall``:

* start the call handler with ``Timer(1, callCallback)``, so nothing can answer before 1 s (defect 5);
* answer a CANCEL with ``200 OK`` only: no ``487 Request Terminated`` for the INVITE, the call stays
  RINGING and the handler answers it anyway (defect 3);
* build RTP clients even when no offered codec is usable (defect 4, second half) and can only
  answer 486 to anything else — no 404 for unknown numbers, no 488;
* send the BYE built from the caller's INVITE (defect 2), and every response to the registrar (8);
* delete a call from ``phone.calls`` as soon as its handler thread returns, and never release the
  RTP ports of incoming calls.

What the endpoint gets (see docs/pyvoip-patches.md for the full API): ``HardenedVoIPPhone`` with
``register=False`` for direct mode, ``screen_call`` (return a status such as 404 to refuse an
INVITE before anything else happens), ``on_cancelled`` / ``on_remote_hangup`` callbacks,
``dial()`` for agent legs; ``HardenedVoIPCall`` with ``dialled``, ``end_reason``, ``ended``
(an Event), ``clear_audio()`` and ``audio_pending_seconds``.
"""

from __future__ import annotations

import io
import logging
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from telephony.pyvoip_patches.client import HardenedSIPClient
from telephony.pyvoip_patches.message import HardenedSIPMessage, uri_host_port, uri_user
from telephony.pyvoip_patches.rtp import HardenedRTPClient
from telephony.pyvoip_patches.sdp import NegotiatedAudio, answer_body, negotiate, offer_body
from telephony.pyvoip_patches.transport import Dialog, contact_uri, new_branch, new_tag
from telephony.pyvoip_patches.version import import_pyvoip

_voip, _sip, _rtp = import_pyvoip()
VoIPPhone = _voip.VoIPPhone
VoIPCall = _voip.VoIPCall
CallState = _voip.CallState
InvalidStateError = _voip.InvalidStateError
NoPortsAvailableError = _voip.NoPortsAvailableError
PhoneStatus = _voip.PhoneStatus
SIPMessageType = _sip.SIPMessageType
TransmitType = _rtp.TransmitType

log = logging.getLogger(__name__)

ScreenCall = Callable[[HardenedSIPMessage], int | None]
CallHook = Callable[["HardenedVoIPCall"], None]


class HardenedVoIPCall(VoIPCall):  # type: ignore[misc, valid-type]
    """One call (incoming or placed by :meth:`HardenedVoIPPhone.dial`)."""

    def __init__(
        self,
        phone: HardenedVoIPPhone,
        callstate: Any,
        request: HardenedSIPMessage,
        session_id: int,
        myIP: str,
        *,
        dialog: Dialog,
        rtp_port: int,
        rtp_sock: socket.socket,
        media: NegotiatedAudio | None = None,
        sendmode: str = "sendrecv",
    ) -> None:
        # Not calling VoIPCall.__init__: it negotiates with the stock (crashing) code and builds
        # stock RTP clients. These are the attributes the inherited methods read.
        self.state = callstate
        self.phone = phone
        self.sip = phone.sip
        self.request = request
        self.call_id: str = request.headers["Call-ID"]
        self.session_id = str(session_id)
        self.myIP = myIP
        self.rtpPortHigh = phone.rtpPortHigh
        self.rtpPortLow = phone.rtpPortLow
        self.sendmode = sendmode
        self.dtmfLock = threading.Lock()
        self.dtmf = io.StringIO()
        self.RTPClients: list[HardenedRTPClient] = []
        self.connections = self.audioPorts = self.videoPorts = 0
        self.assignedPorts: dict[int, Any] = {rtp_port: {}}
        self.dialog = dialog
        self.media = media
        self.rtp_port = rtp_port
        self._rtp_sock: socket.socket | None = rtp_sock
        self.lock = threading.RLock()
        self.ended = threading.Event()
        """Set when the call ends for any reason."""
        self.answered_event = threading.Event()
        self.end_reason: str | None = None
        """``cancelled`` (caller gave up before answer), ``remote-bye``, ``local-bye``,
        ``rejected:<code>`` (we refused), ``failed:<code>`` (our outgoing call was refused),
        ``cancelled-local`` (we cancelled our outgoing call), ``shutdown``."""
        self.cancelled = False
        self.dialled: str | None = uri_user(request.uri) if request.uri else None
        """The number the caller dialled (user part of the Request-URI)."""
        self.final_status: int | None = None
        self._acked = threading.Event()
        self._last_provisional: bytes | None = None
        self._ok: bytes | None = None
        self._invite_bytes: bytes | None = None
        self._invite_branch: str | None = None
        self._invite_cseq = 0
        self._invite_destination: tuple[str, int] | None = None
        self._invite_answered_provisionally = False
        self._cancel_sent = False
        if media is not None:
            self._make_rtp(media)

    def _make_rtp(self, media: NegotiatedAudio) -> None:
        self.media = media
        self.assignedPorts = {self.rtp_port: media.assoc()}
        self.RTPClients = [
            HardenedRTPClient(
                media.assoc(),
                self.myIP,
                self.rtp_port,
                media.remote_ip,
                media.remote_port,
                TransmitType(self.sendmode),
                dtmf=self.dtmf_callback,
                sock=self._rtp_sock,
            )
        ]
        self._rtp_sock = None

    def __del__(self) -> None:  # stock __del__ releases ports of whatever call; ours do it on end
        pass

    # -- incoming call control -----------------------------------------------------------------

    def ringing(self) -> None:
        """Send (or re-send) 180 Ringing."""
        if self._last_provisional is None:
            self._last_provisional = self.sip.send_response(
                self.request,
                180,
                to_tag=self.dialog.local_tag,
                copy_record_route=True,
                headers=[f"Contact: <sip:{self.phone.username}@{self.myIP}:{self.sip.myPort}>"],
            )
        else:
            self.sip.send_to(self._last_provisional, self.phone.reply_destination(self.request))

    def answer(self) -> None:
        """Send 200 OK with our SDP at once; raises InvalidStateError if cancelled or not ringing."""
        with self.lock:
            if self.state != CallState.RINGING:
                raise InvalidStateError("Call was cancelled" if self.cancelled else "Call is not ringing")
            assert self.media is not None
            for client in self.RTPClients:
                client.start()
            body = answer_body(int(self.session_id), self.myIP, self.rtp_port, self.media, self.sendmode)
            self._ok = self.sip.send_response(
                self.request,
                200,
                to_tag=self.dialog.local_tag,
                copy_record_route=True,
                body=body,
                headers=[
                    f"Contact: <sip:{self.phone.username}@{self.myIP}:{self.sip.myPort}>",
                    "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS",
                ],
            )
            self.state = CallState.ANSWERED
            self.answered_event.set()
        threading.Thread(target=self._retransmit_ok, name=f"SIP 200 {self.call_id[:8]}", daemon=True).start()

    def _retransmit_ok(self) -> None:
        # RFC 3261 13.3.1.4: resend the 2xx until the ACK arrives (T1 doubling, capped at T2, 32 s).
        interval, waited = 0.5, 0.0
        while not self._acked.wait(interval) and waited < 32 and self.state == CallState.ANSWERED:
            waited += interval
            if self._ok is not None:
                self.sip.send_to(self._ok, self.phone.reply_destination(self.request))
            interval = min(interval * 2, 4.0)

    def deny(self, code: int = 486) -> None:
        """Refuse a ringing call with a final response (486 Busy Here by default)."""
        with self.lock:
            if self.state != CallState.RINGING:
                raise InvalidStateError("Call is not ringing")
            self.sip.send_response(self.request, code, to_tag=self.dialog.local_tag)
            self._finish(f"rejected:{code}")

    def hangup(self) -> None:
        """Send our own BYE (own Via + fresh branch, Route set, dialog CSeq) and end the call."""
        with self.lock:
            if self.state != CallState.ANSWERED:
                raise InvalidStateError("Call is not answered")
            bye = self.dialog.request("BYE", self.myIP, self.sip.myPort)
            self.sip.send_to(bye, self.dialog.destination())
            self._finish("local-bye")

    def bye(self) -> None:
        """The far end sent BYE."""
        with self.lock:
            if self.state in (CallState.ANSWERED, CallState.RINGING, CallState.DIALING):
                self._finish("remote-bye")

    def cancelled_by_caller(self) -> bool:
        """CANCEL arrived: if not answered yet, answer the INVITE 487 and end. True if it did."""
        with self.lock:
            if self.state != CallState.RINGING:
                return False
            self.cancelled = True
            self.sip.send_response(self.request, 487, to_tag=self.dialog.local_tag)
            self._finish("cancelled")
            return True

    def renegotiate(self, request: HardenedSIPMessage) -> None:
        """A re-INVITE (e.g. the caller's hold): follow the new address, answer with our SDP."""
        media = negotiate(request.body) if request.body.get("m") else self.media
        with self.lock:
            if media is None or self.media is None:
                self.sip.send_response(request, 488, to_tag=self.dialog.local_tag)
                return
            for client in self.RTPClients:
                client.outIP, client.outPort = media.remote_ip, media.remote_port
            body = answer_body(int(self.session_id), self.myIP, self.rtp_port, self.media, self.sendmode)
            self.sip.send_response(
                request,
                200,
                to_tag=self.dialog.local_tag,
                body=body,
                headers=[f"Contact: <sip:{self.phone.username}@{self.myIP}:{self.sip.myPort}>"],
            )

    # -- outgoing call control -----------------------------------------------------------------

    def cancel(self) -> None:
        """Give up on our outgoing call before it is answered (e.g. the agent's ring time ran out)."""
        with self.lock:
            if self.state != CallState.DIALING or self._invite_destination is None:
                raise InvalidStateError("Call is not dialing")
            lines = [
                f"CANCEL {self.dialog.remote_target} SIP/2.0",
                f"Via: SIP/2.0/UDP {self.myIP}:{self.sip.myPort};branch={self._invite_branch};rport",
                "Max-Forwards: 70",
                f"From: {self.dialog.local_uri};tag={self.dialog.local_tag}",
                f"To: {self.dialog.remote_uri}",
                f"Call-ID: {self.call_id}",
                f"CSeq: {self._invite_cseq} CANCEL",
                "Content-Length: 0",
            ]
            self.sip.send_to(("\r\n".join(lines) + "\r\n\r\n").encode(), self._invite_destination)
            self._cancel_sent = True
        # The far end answers 487 (then we ACK and end); if it stays silent, end anyway.
        give_up = threading.Timer(4.0, self._give_up_cancel)
        give_up.daemon = True
        give_up.start()

    def _give_up_cancel(self) -> None:
        with self.lock:
            if self.state == CallState.DIALING:
                self._finish("cancelled-local")

    def on_response(self, response: HardenedSIPMessage) -> None:
        method = response.headers["CSeq"]["method"]
        if method != "INVITE":
            return  # 200 for our BYE/CANCEL: nothing to do
        code = response.status_code
        with self.lock:
            if code < 200:
                self._invite_answered_provisionally = True
                return
            if 200 <= code < 300:
                if self.state == CallState.DIALING:
                    self._outgoing_established(response)
                self._send_ack_2xx(response)
                if self._cancel_sent and self.state == CallState.ANSWERED:
                    # 200 crossed our CANCEL: the call exists at the far end, so end it properly.
                    self.hangup()
                    self.end_reason = "cancelled-local"
                return
            self._send_ack_failure(response)
            if self.state == CallState.DIALING:
                self.final_status = code
                self._finish("cancelled-local" if self._cancel_sent else f"failed:{code}")

    def _outgoing_established(self, response: HardenedSIPMessage) -> None:
        self.dialog.remote_tag = response.headers["To"]["tag"]
        target = contact_uri(str(response.headers.get("Contact", "")))
        if target:
            self.dialog.remote_target = target
        self.dialog.route_set = list(reversed(response.record_route))
        media = negotiate(response.body) if response.body.get("m") else None
        if media is None:
            self.final_status = 488
            self.sip.send_to(self.dialog.request("BYE", self.myIP, self.sip.myPort), self.dialog.destination())
            self._finish("failed:488")
            return
        self._make_rtp(media)
        for client in self.RTPClients:
            client.start()
        self.state = CallState.ANSWERED
        self.final_status = response.status_code
        self.answered_event.set()

    def _send_ack_2xx(self, response: HardenedSIPMessage) -> None:
        ack = self.dialog.request("ACK", self.myIP, self.sip.myPort, cseq=self._invite_cseq)
        self.sip.send_to(ack, self.dialog.destination())

    def _send_ack_failure(self, response: HardenedSIPMessage) -> None:
        # RFC 3261 17.1.1.3: same branch as the INVITE, To from the response, to the same hop.
        to_value = next((v for n, v in response.header_lines if n == "To"), f"{self.dialog.remote_uri}")
        lines = [
            f"ACK {self.dialog.remote_target} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.myIP}:{self.sip.myPort};branch={self._invite_branch};rport",
            "Max-Forwards: 70",
            f"From: {self.dialog.local_uri};tag={self.dialog.local_tag}",
            f"To: {to_value}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self._invite_cseq} ACK",
            "Content-Length: 0",
        ]
        if self._invite_destination is not None:
            self.sip.send_to(("\r\n".join(lines) + "\r\n\r\n").encode(), self._invite_destination)

    # -- audio ---------------------------------------------------------------------------------

    def clear_audio(self) -> None:
        """Stop what is being played (drop queued, unsent audio)."""
        for client in self.RTPClients:
            client.clear_output()

    @property
    def audio_pending_seconds(self) -> float:
        return max((c.pending_output_seconds for c in self.RTPClients), default=0.0)

    # -- ending --------------------------------------------------------------------------------

    def _finish(self, reason: str) -> None:
        if self.state == CallState.ENDED and self.ended.is_set():
            return
        self.state = CallState.ENDED
        self.end_reason = reason
        for client in self.RTPClients:
            client.stop()
        if self._rtp_sock is not None:
            self._rtp_sock.close()
            self._rtp_sock = None
        self._acked.set()
        self.phone._forget(self)
        self.ended.set()


class HardenedVoIPPhone(VoIPPhone):  # type: ignore[misc, valid-type]
    """pyVoIP's VoIPPhone with the fixes above; ``register=False`` is direct mode (no registrar)."""

    def __init__(
        self,
        server: str,
        port: int,
        username: str,
        password: str,
        myIP: str = "127.0.0.1",
        callCallback: Callable[[HardenedVoIPCall], None] | None = None,
        sipPort: int = 5060,
        rtpPortLow: int = 10000,
        rtpPortHigh: int = 20000,
        *,
        register: bool = True,
        register_expires: int = 120,
        screen_call: ScreenCall | None = None,
        on_cancelled: CallHook | None = None,
        on_remote_hangup: CallHook | None = None,
    ) -> None:
        super().__init__(
            server,
            port,
            username,
            password,
            myIP=myIP,
            callCallback=callCallback,
            sipPort=sipPort,
            rtpPortLow=rtpPortLow,
            rtpPortHigh=rtpPortHigh,
        )
        self.sip = HardenedSIPClient(
            server,
            port,
            username,
            password,
            phone=self,
            myIP=myIP,
            myPort=sipPort,
            callCallback=self.callback,
            fatalCallback=self.fatal,
            register=register,
            register_expires=register_expires,
        )
        self.screen_call = screen_call
        self.on_cancelled = on_cancelled
        self.on_remote_hangup = on_remote_hangup
        self.calls: dict[str, HardenedVoIPCall] = {}
        self._calls_lock = threading.RLock()
        self._ports: set[int] = set()

    @property
    def sip_port(self) -> int:
        """The SIP port actually bound (useful with ``sipPort=0``)."""
        return int(self.sip.myPort)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._status = PhoneStatus.REGISTERING
        try:
            self.sip.start()
        except Exception:
            self._status = PhoneStatus.FAILED
            raise
        self.NSD = True
        self._status = PhoneStatus.REGISTERED

    def stop(self, failed: bool = False) -> None:
        self._status = PhoneStatus.DEREGISTERING
        for call in list(self.calls.values()):
            try:
                if call.state == CallState.ANSWERED:
                    call.hangup()
                elif call.state == CallState.RINGING:
                    call.deny(480)
                elif call.state == CallState.DIALING:
                    call.cancel()
            except Exception:
                log.warning("ending call %s at shutdown failed", call.call_id, exc_info=True)
        self.sip.stop()
        self.NSD = False
        self._status = PhoneStatus.FAILED if failed else PhoneStatus.INACTIVE

    # -- dispatch ------------------------------------------------------------------------------

    def callback(self, message: HardenedSIPMessage) -> None:
        call_id = message.headers["Call-ID"]
        if message.type == SIPMessageType.RESPONSE:
            call = self.calls.get(call_id)
            if call is not None:
                call.on_response(message)
            return
        method = message.method
        if method == "INVITE":
            self._on_invite(message)
        elif method == "ACK":
            call = self.calls.get(call_id)
            if call is not None:
                call._acked.set()
        elif method == "BYE":
            self._on_bye(message)
        elif method == "CANCEL":
            self._on_cancel(message)

    def reply_destination(self, request: HardenedSIPMessage) -> tuple[str, int]:
        from telephony.pyvoip_patches.transport import response_destination

        return response_destination(request)

    def _on_invite(self, request: HardenedSIPMessage) -> None:
        call_id = request.headers["Call-ID"]
        existing = self.calls.get(call_id)
        if existing is not None:
            if existing.state == CallState.RINGING:
                existing.ringing()  # a retransmitted INVITE
            elif existing.state == CallState.ANSWERED:
                if request.headers["CSeq"]["check"] == existing.request.headers["CSeq"]["check"]:
                    if existing._ok is not None:  # our 200 was lost
                        self.sip.send_to(existing._ok, self.reply_destination(request))
                else:
                    existing.renegotiate(request)
            return
        if request.headers.get("To", {}).get("tag"):
            self.sip.send_response(request, 481)  # in-dialog INVITE for a dialog we do not know
            return
        if self.callCallback is None:
            self.sip.send_response(request, 480, to_tag=new_tag())
            return
        if self.screen_call is not None:
            code = self.screen_call(request)
            if code is not None:
                self.sip.send_response(request, int(code), to_tag=new_tag())
                return
        media = negotiate(request.body) if request.body.get("m") else None
        if media is None:
            self.sip.send_response(request, 488, to_tag=new_tag(), headers=["Accept: application/sdp"])
            return
        try:
            port, sock = self.reserve_rtp_port()
        except NoPortsAvailableError:
            self.sip.send_response(request, 503, to_tag=new_tag(), headers=["Retry-After: 5"])
            return
        session_id = random.randint(1, 10**9)
        call = HardenedVoIPCall(
            self,
            CallState.RINGING,
            request,
            session_id,
            self.myIP,
            dialog=Dialog.for_incoming(request, new_tag()),
            rtp_port=port,
            rtp_sock=sock,
            media=media,
            sendmode=self.recvmode,
        )
        with self._calls_lock:
            self.calls[call_id] = call
        call.ringing()
        # The fix for defect 5: the handler runs now, not after a fixed 1 s timer.
        threading.Thread(target=self._run_handler, args=(call,), name=f"Call {call_id[:16]}", daemon=True).start()

    def _run_handler(self, call: HardenedVoIPCall) -> None:
        try:
            if self.callCallback is not None:
                self.callCallback(call)
        except Exception:
            log.exception("call handler failed (Call-ID %s)", call.call_id)
            with call.lock:
                if call.state == CallState.RINGING:
                    call.deny(500)
                elif call.state == CallState.ANSWERED:
                    call.hangup()

    def _on_bye(self, request: HardenedSIPMessage) -> None:
        call = self.calls.get(request.headers["Call-ID"])
        if call is None:
            self.sip.send_response(request, 481)
            return
        self.sip.send_response(request, 200)
        call.bye()
        if self.on_remote_hangup is not None:
            self.on_remote_hangup(call)

    def _on_cancel(self, request: HardenedSIPMessage) -> None:
        call = self.calls.get(request.headers["Call-ID"])
        if call is None:
            self.sip.send_response(request, 481, to_tag=new_tag())
            return
        # 200 for the CANCEL itself (RFC 3261 9.2), then 487 for the INVITE if it was still pending.
        self.sip.send_response(request, 200, to_tag=call.dialog.local_tag)
        if call.cancelled_by_caller() and self.on_cancelled is not None:
            self.on_cancelled(call)

    # -- outgoing calls ------------------------------------------------------------------------

    def dial(self, target: str, *, display_user: str | None = None) -> HardenedVoIPCall:
        """Place a call to ``sip:user@host:port`` (direct) or to a number via the registrar.

        Returns at once with the call DIALING; wait on ``call.answered_event`` / ``call.ended``.
        A failure leaves ``end_reason == "failed:<code>"`` (e.g. 486, 480, 408 on no answer).
        """
        if target.startswith(("sip:", "sips:")):
            uri = target
            destination = (self.server, self.port) if self.sip.register_enabled else uri_host_port(uri)
        else:
            uri = f"sip:{target}@{self.server}:{self.port}"
            destination = (self.server, self.port)
        port, sock = self.reserve_rtp_port()
        call_id = f"{uuid.uuid4().hex}@{self.myIP}"
        user = display_user or self.username
        dialog = Dialog(
            call_id=call_id,
            local_tag=new_tag(),
            remote_tag="",
            local_uri=f"<sip:{user}@{self.myIP}:{self.sip.myPort}>",
            remote_uri=f"<{uri}>",
            remote_target=uri,
            route_set=[],
            local_cseq=1,
            fallback=destination,
        )
        session_id = random.randint(1, 10**9)
        branch = new_branch()
        invite = dialog.request(
            "INVITE",
            self.myIP,
            self.sip.myPort,
            cseq=1,
            branch=branch,
            body=offer_body(session_id, self.myIP, port, self.sendmode),
            headers=[
                f"Contact: <sip:{user}@{self.myIP}:{self.sip.myPort}>",
                "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS",
            ],
        )
        request = HardenedSIPMessage(invite)
        call = HardenedVoIPCall(
            self,
            CallState.DIALING,
            request,
            session_id,
            self.myIP,
            dialog=dialog,
            rtp_port=port,
            rtp_sock=sock,
            sendmode=self.sendmode,
        )
        call.dialled = uri_user(uri)
        call._invite_bytes, call._invite_branch, call._invite_cseq = invite, branch, 1
        call._invite_destination = destination
        with self._calls_lock:
            self.calls[call_id] = call
        self.sip.send_to(invite, destination)
        threading.Thread(
            target=self._retransmit_invite, args=(call,), name=f"SIP INVITE {call_id[:8]}", daemon=True
        ).start()
        return call

    def _retransmit_invite(self, call: HardenedVoIPCall) -> None:
        # RFC 3261 17.1.1.2 timer A, until any response; timer B (32 s) ends the attempt with 408.
        interval, waited = 0.5, 0.0
        while call.state == CallState.DIALING and waited < 32:
            if call.ended.wait(interval):
                return
            waited += interval
            if call._invite_answered_provisionally:
                interval = 1.0
                continue
            if call._invite_bytes is not None and call._invite_destination is not None:
                self.sip.send_to(call._invite_bytes, call._invite_destination)
            interval = min(interval * 2, 4.0)
        with call.lock:
            if call.state == CallState.DIALING and not call._invite_answered_provisionally:
                call.final_status = 408
                call._finish("failed:408")

    # -- ports ---------------------------------------------------------------------------------

    def reserve_rtp_port(self) -> tuple[int, socket.socket]:
        """An even RTP port bound now (so a port taken by another process is skipped, not fatal)."""
        candidates = [p for p in range(self.rtpPortLow + self.rtpPortLow % 2, self.rtpPortHigh + 1, 2)]
        random.shuffle(candidates)
        with self.portsLock:
            for port in candidates[:200]:
                if port in self._ports:
                    continue
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    sock.bind((self.myIP, port))
                except OSError:
                    sock.close()
                    continue
                self._ports.add(port)
                self.assignedPorts.append(port)
                return port, sock
        raise NoPortsAvailableError("No ports were available to be assigned")

    def request_port(self, blocking: bool = True) -> int:
        port, sock = self.reserve_rtp_port()
        sock.close()
        return port

    def release_ports(self, call: Any = None) -> None:
        if call is None:
            return
        with self.portsLock:
            for port in list(call.assignedPorts):
                self._ports.discard(port)
                if port in self.assignedPorts:
                    self.assignedPorts.remove(port)

    def _forget(self, call: HardenedVoIPCall) -> None:
        with self._calls_lock:
            if self.calls.get(call.call_id) is call:
                del self.calls[call.call_id]
        self.release_ports(call)

    def _cleanup_dead_calls(self) -> None:
        """Stock removes calls whose handler returned; ours live until they end."""
        return None


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.01) -> bool:
    """Poll ``predicate`` until true or ``timeout``; small helper for handlers and tests."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
