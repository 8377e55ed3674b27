"""Hardened SIP transport: one reader, replies to the sender, registration that cannot eat calls.

Stock 1.6.8 ``SIPClient``:

* registration (and its refresh every ``default_expires - 5`` s) takes the receive lock and reads
  the shared socket itself: whatever arrives meanwhile — an INVITE, a BYE, an ACK — is consumed as
  "the REGISTER response"; the registration is then counted as failed, and after three such
  failures the phone stops for good (defect 7, "re-registration can swallow an INVITE");
* ``recv`` reads with ``recv`` (no source address), so responses cannot go back to the sender
  (defect 8); garbage and unknown methods (OPTIONS…) get no answer at all; ``start()`` waits a
  fixed 1 s before the receive thread runs.

:class:`HardenedSIPClient` has a single receive thread that owns the socket. It parses every
datagram with :class:`HardenedSIPMessage`; unparseable requests get ``400 Bad Request`` where a
response can be built, anything else is dropped and counted (``stats``), and no exception leaves
the loop. Responses to REGISTER are handed to the registration thread through a queue; other
requests and responses go to the phone (``callCallback``). Direct mode (``register=False``) needs no
registrar at all.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from telephony.pyvoip_patches.message import HardenedSIPMessage, VersionNotSupported
from telephony.pyvoip_patches.transport import (
    ALLOW,
    USER_AGENT,
    build_response,
    new_branch,
    new_tag,
    response_destination,
    salvage_bad_request,
)
from telephony.pyvoip_patches.version import import_pyvoip
from telephony.sip_digest import digest_header

_voip, _sip, _rtp = import_pyvoip()
SIPClient = _sip.SIPClient
SIPMessageType = _sip.SIPMessageType
SIPParseError = _sip.SIPParseError
PhoneStatus = _voip.PhoneStatus

log = logging.getLogger(__name__)

MAX_DATAGRAM = 65535
_HANDLED_BY_PHONE = {"INVITE", "ACK", "BYE", "CANCEL"}


class RegistrationError(RuntimeError):
    """The registrar refused or did not answer the first REGISTER."""


class HardenedSIPClient(SIPClient):  # type: ignore[misc, valid-type]
    """pyVoIP's SIPClient with the fixes in the module docstring."""

    NSD: bool
    myPort: int

    def __init__(
        self,
        server: str,
        port: int,
        username: str,
        password: str,
        phone: Any,
        myIP: str = "127.0.0.1",
        myPort: int = 5060,
        callCallback: Callable[[HardenedSIPMessage], None] | None = None,
        fatalCallback: Callable[..., None] | None = None,
        *,
        register: bool = True,
        register_expires: int = 120,
        register_timeout: float = 5.0,
    ) -> None:
        super().__init__(
            server,
            port,
            username,
            password,
            phone,
            myIP=myIP,
            myPort=myPort,
            callCallback=callCallback,
            fatalCallback=fatalCallback,
        )
        self.register_enabled = register
        self.default_expires = register_expires
        self.register_timeout = register_timeout
        self.registered = threading.Event()
        self.registered_expires = 0
        self.registrations = 0
        self.stats = {
            "datagrams": 0,
            "malformed": 0,
            "bad_request_sent": 0,
            "dropped": 0,
            "handler_errors": 0,
        }
        self._stop = threading.Event()
        self._register_replies: queue.Queue[HardenedSIPMessage] = queue.Queue()
        self._register_call_id = f"{uuid.uuid4().hex}@{myIP}"
        self._register_tag = new_tag()
        self._register_cseq = 0
        self._register_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self.NSD:
            raise RuntimeError("Attempted to start already started SIPClient")
        self.NSD = True
        self._stop.clear()
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.s.bind((self.myIP, self.myPort))
        except OSError:
            self.NSD = False
            self.s.close()
            raise
        self.myPort = self.s.getsockname()[1]  # sipPort=0 asks the OS for a free port
        self.s.settimeout(0.25)
        self.out = self.s
        self._spawn(self.recv_loop, "SIP receive")
        if self.register_enabled:
            if not self.register():
                self.stop()
                raise RegistrationError(f"registration with {self.server}:{self.port} failed")
            self._spawn(self._registration_loop, "SIP register")

    def stop(self) -> None:
        if not self.NSD:
            return
        if self.register_enabled and self.registered.is_set():
            try:
                self.register(expires=0)
            except Exception:
                log.warning("de-registration failed", exc_info=True)
        self.NSD = False
        self._stop.set()
        try:
            self.s.close()
        except OSError:
            pass
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)
        self._threads.clear()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- sending -------------------------------------------------------------------------------

    def send_to(self, data: bytes, destination: tuple[str, int]) -> None:
        try:
            self.s.sendto(data, destination)
        except OSError as exc:
            if self.NSD:
                log.warning("SIP send failed: %s", exc.strerror or exc)

    def send_response(self, request: HardenedSIPMessage, code: int, reason: str | None = None, **kwargs: Any) -> bytes:
        """Build a response with :func:`build_response` and send it to the request's source."""
        data = build_response(request, code, reason, **kwargs)
        self.send_to(data, response_destination(request))
        return data

    # -- receiving -----------------------------------------------------------------------------

    def recv_loop(self) -> None:
        while self.NSD:
            try:
                raw, source = self.s.recvfrom(MAX_DATAGRAM)
            except TimeoutError:
                continue
            except OSError:
                if not self.NSD:
                    break
                continue
            try:
                self.handle_datagram(raw, source)
            except Exception:  # nothing may end the SIP thread
                self.stats["handler_errors"] += 1
                log.exception("SIP datagram handling failed")

    def recv(self) -> None:
        """Stock entry point kept for callers of the old API: handle one datagram."""
        raw, source = self.s.recvfrom(MAX_DATAGRAM)
        self.handle_datagram(raw, source)

    def handle_datagram(self, raw: bytes, source: tuple[str, int]) -> None:
        self.stats["datagrams"] += 1
        if not raw.strip(b"\r\n\x00 "):
            return  # keep-alive (CRLF, or stock pyVoIP's four NULs)
        try:
            message = HardenedSIPMessage(raw, source)
        except VersionNotSupported:
            self.stats["malformed"] += 1
            reply = salvage_bad_request(raw, source, "SIP version not supported")
            if reply is not None:
                self.send_to(reply[0].replace(b"400 Bad Request", b"505 Version Not Supported", 1), reply[1])
            return
        except Exception as exc:
            self.stats["malformed"] += 1
            reason = str(exc) if isinstance(exc, SIPParseError) else "malformed message"
            reply = salvage_bad_request(raw, source, reason)
            if reply is None:
                self.stats["dropped"] += 1
                return
            self.stats["bad_request_sent"] += 1
            self.send_to(*reply)
            return
        try:
            self.parse_message(message)
        except Exception:
            self.stats["handler_errors"] += 1
            log.exception("SIP message handling failed (Call-ID %s)", message.headers.get("Call-ID"))
            if message.type == SIPMessageType.MESSAGE and message.method != "ACK":
                self.send_response(message, 500)

    def parse_message(self, message: HardenedSIPMessage) -> None:
        if message.type == SIPMessageType.RESPONSE:
            if message.headers["CSeq"]["method"] == "REGISTER":
                if message.headers["Call-ID"] == self._register_call_id:
                    self._register_replies.put(message)
                return
            if self.callCallback is not None:
                self.callCallback(message)
            return
        method = message.method
        if method == "OPTIONS":
            self.send_response(message, 200, to_tag=new_tag(), headers=[f"Allow: {ALLOW}", "Accept: application/sdp"])
        elif method in _HANDLED_BY_PHONE:
            if self.callCallback is None:
                if method != "ACK":
                    self.send_response(message, 481 if method != "INVITE" else 480, to_tag=new_tag())
                return
            self.callCallback(message)
        else:
            self.send_response(message, 405, to_tag=new_tag(), headers=[f"Allow: {ALLOW}"])

    # -- registration --------------------------------------------------------------------------

    def register(self, expires: int | None = None) -> bool:
        """One REGISTER transaction (with digest if challenged); True if the registrar said 2xx."""
        with self._register_lock:
            expires = self.default_expires if expires is None else expires
            auth: str | None = None
            for _attempt in range(3):
                cseq = self._next_register_cseq()
                self._drain_register_replies()
                self.send_to(self._build_register(expires, cseq, auth), (self.server, self.port))
                reply = self._await_register_reply(cseq)
                if reply is None:
                    break
                if reply.status_code in (401, 407) and auth is None:
                    auth = self._digest(reply, "REGISTER", f"sip:{self.server}")
                    continue
                if 200 <= reply.status_code < 300:
                    if expires == 0:
                        self.registered.clear()
                        return True
                    self.registered_expires = self._granted_expires(reply, expires)
                    self.registrations += 1
                    self.registered.set()
                    self.phone._status = PhoneStatus.REGISTERED
                    return True
                log.warning("registrar answered REGISTER with %s", reply.status_code)
                break
            if expires != 0:
                self.registered.clear()
            return False

    def _registration_loop(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            if self.registered.is_set():
                # Refresh well before expiry, as RFC 3261 10.2.4 suggests; never more than once a second.
                wait = max(1.0, min(self.registered_expires * 0.5, self.registered_expires - 5))
            else:
                wait = backoff
            if self._stop.wait(wait):
                return
            if self.register():
                backoff = 1.0
            else:
                self.phone._status = PhoneStatus.REGISTERING
                backoff = min(backoff * 2, 30.0)

    def _next_register_cseq(self) -> int:
        self._register_cseq += 1
        return self._register_cseq

    def _drain_register_replies(self) -> None:
        while True:
            try:
                self._register_replies.get_nowait()
            except queue.Empty:
                return

    def _await_register_reply(self, cseq: int) -> HardenedSIPMessage | None:
        deadline = time.monotonic() + self.register_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self._stop.is_set() and self.NSD is False):
                return None
            try:
                reply = self._register_replies.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if int(reply.headers["CSeq"]["check"]) != cseq or reply.status_code < 200:
                continue  # 100 Trying, or a late answer to an earlier attempt
            return reply

    def _build_register(self, expires: int, cseq: int, auth: str | None) -> bytes:
        aor = f"sip:{self.username}@{self.server}"
        lines = [
            f"REGISTER sip:{self.server}:{self.port} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.myIP}:{self.myPort};branch={new_branch()};rport",
            "Max-Forwards: 70",
            f'From: "{self.username}" <{aor}>;tag={self._register_tag}',
            f'To: "{self.username}" <{aor}>',
            f"Call-ID: {self._register_call_id}",
            f"CSeq: {cseq} REGISTER",
            f"Contact: <sip:{self.username}@{self.myIP}:{self.myPort};transport=udp>",
            f"Expires: {expires}",
            f"Allow: {ALLOW}",
            f"User-Agent: {USER_AGENT}",
        ]
        if auth:
            lines.append(auth)
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")

    def _digest(self, challenge: HardenedSIPMessage, method: str, uri: str) -> str:
        header = "WWW-Authenticate" if challenge.status_code == 401 else "Proxy-Authenticate"
        params = {str(k).lower(): str(v) for k, v in (challenge.headers.get(header) or {}).items()}
        return digest_header(challenge.status_code, params, method=method, uri=uri, username=self.username,
                             password=self.password)

    @staticmethod
    def _granted_expires(reply: HardenedSIPMessage, asked: int) -> int:
        contact = str(reply.headers.get("Contact", ""))
        marker = "expires="
        if marker in contact.lower():
            value = contact.lower().split(marker, 1)[1].split(";")[0].split(",")[0].strip()
            if value.isdigit():
                return int(value)
        expires = str(reply.headers.get("Expires", "")).strip()
        return int(expires) if expires.isdigit() else asked
