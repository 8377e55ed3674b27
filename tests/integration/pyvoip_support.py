"""Test support for tests/integration/test_pyvoip_*.py: a raw-UDP SIP peer and phone factories.

``RawSipPeer`` is a plain UDP socket on 127.0.0.1 that sends hand-written SIP and records every
datagram it receives with its source address. It parses what it receives with its own few lines
(``Received``) rather than with the code under test, so a test observes stock and hardened
behaviour through the same independent eyes.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import telephony.pyvoip_patches as patches  # first: fixes the pyVoIP import order
from tests.kamailio import Kamailio, free_udp_port

VoIPPhone = patches.import_pyvoip()[0].VoIPPhone

PCMU_OFFER = (
    "v=0\r\n"
    "o=peer 1 1 IN IP4 127.0.0.1\r\n"
    "s=test\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio {rtp_port} RTP/AVP {formats}\r\n"
    "{attributes}"
)


def sdp_offer(rtp_port: int, formats: str = "0 101", attributes: str | None = None) -> str:
    if attributes is None:
        attributes = "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
    return PCMU_OFFER.format(rtp_port=rtp_port, formats=formats, attributes=attributes + "a=sendrecv\r\n")


@dataclass
class Received:
    """A datagram as the peer saw it: start line, headers (lower-case name → values), body."""

    raw: bytes
    source: tuple[str, int]
    at: float
    start: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: str = ""

    @classmethod
    def parse(cls, raw: bytes, source: tuple[str, int]) -> Received:
        item = cls(raw, source, time.monotonic())
        text = raw.decode("utf-8", errors="replace")
        head, _, item.body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        item.start = lines[0]
        for line in lines[1:]:
            name, _, value = line.partition(":")
            item.headers.setdefault(name.strip().lower(), []).append(value.strip())
        return item

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else ""

    @property
    def status(self) -> int:
        parts = self.start.split(" ")
        return int(parts[1]) if self.start.startswith("SIP/2.0 ") and parts[1].isdigit() else 0

    @property
    def method(self) -> str:
        return "" if self.start.startswith("SIP/") else self.start.split(" ")[0]

    @property
    def cseq_method(self) -> str:
        return self.header("cseq").split(" ")[-1]


class RawSipPeer:
    """A UDP socket on loopback that plays a SIP user agent by hand."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="raw SIP peer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while self._running:
            try:
                raw, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.received.append(Received.parse(raw, source))

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=1)
        self.sock.close()

    def send(self, data: str | bytes, destination: tuple[str, int]) -> float:
        self.sock.sendto(data.encode() if isinstance(data, str) else data, destination)
        return time.monotonic()

    def wait_for(self, predicate: Callable[[Received], bool], timeout: float = 3.0) -> Received | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for item in self.received:
                    if predicate(item):
                        return item
            time.sleep(0.005)
        return None

    def all(self, predicate: Callable[[Received], bool]) -> list[Received]:
        with self._lock:
            return [item for item in self.received if predicate(item)]

    def invite(
        self,
        user: str,
        host_port: tuple[str, int],
        *,
        rtp_port: int = 40000,
        sdp: str | None = None,
        call_id: str | None = None,
        extra_headers: str = "",
    ) -> Dialogue:
        call_id = call_id or f"{uuid.uuid4().hex}@127.0.0.1"
        dialogue = Dialogue(
            self, call_id, f"{uuid.uuid4().hex[:8]}", f"z9hG4bK{uuid.uuid4().hex[:16]}", user, host_port
        )
        body = sdp if sdp is not None else sdp_offer(rtp_port)
        dialogue.invite_text = (
            f"INVITE {dialogue.request_uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={dialogue.branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f'From: "Caller" <sip:5551234@127.0.0.1:{self.port}>;tag={dialogue.from_tag}\r\n'
            f"To: <{dialogue.request_uri}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:5551234@127.0.0.1:{self.port}>\r\n"
            f"{extra_headers}"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
        )
        dialogue.sent_at = self.send(dialogue.invite_text, host_port)
        return dialogue


@dataclass
class Dialogue:
    """One call placed by a RawSipPeer."""

    peer: RawSipPeer
    call_id: str
    from_tag: str
    branch: str
    user: str
    destination: tuple[str, int]
    invite_text: str = ""
    sent_at: float = 0.0

    @property
    def request_uri(self) -> str:
        return f"sip:{self.user}@{self.destination[0]}:{self.destination[1]}"

    def response(self, status: int, method: str = "INVITE", timeout: float = 3.0) -> Received | None:
        return self.peer.wait_for(
            lambda r: r.status == status and r.header("call-id") == self.call_id and r.cseq_method == method,
            timeout,
        )

    def final(self, timeout: float = 3.0) -> Received | None:
        return self.peer.wait_for(
            lambda r: r.status >= 200 and r.header("call-id") == self.call_id and r.cseq_method == "INVITE",
            timeout,
        )

    def request(self, method: str, timeout: float = 3.0) -> Received | None:
        return self.peer.wait_for(lambda r: r.method == method and r.header("call-id") == self.call_id, timeout)

    def cancel(self) -> None:
        self.peer.send(
            f"CANCEL {self.request_uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.peer.port};branch={self.branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f'From: "Caller" <sip:5551234@127.0.0.1:{self.peer.port}>;tag={self.from_tag}\r\n'
            f"To: <{self.request_uri}>\r\n"
            f"Call-ID: {self.call_id}\r\n"
            "CSeq: 1 CANCEL\r\n"
            "Content-Length: 0\r\n\r\n",
            self.destination,
        )

    def ack(self, response: Received) -> None:
        """ACK a final response (hop-by-hop for non-2xx, end-to-end with Route set for 2xx)."""
        routes = "".join(f"Route: {r}\r\n" for r in response.headers.get("record-route", []))
        branch = self.branch if response.status >= 300 else f"z9hG4bK{uuid.uuid4().hex[:16]}"
        self.peer.send(
            f"ACK {self.request_uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.peer.port};branch={branch};rport\r\n"
            f"{routes if response.status < 300 else ''}"
            "Max-Forwards: 70\r\n"
            f'From: "Caller" <sip:5551234@127.0.0.1:{self.peer.port}>;tag={self.from_tag}\r\n'
            f"To: {response.header('to')}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            "CSeq: 1 ACK\r\n"
            "Content-Length: 0\r\n\r\n",
            self.destination,
        )


@contextmanager
def raw_peer() -> Iterator[RawSipPeer]:
    peer = RawSipPeer()
    try:
        yield peer
    finally:
        peer.close()


def rtp_range() -> tuple[int, int]:
    """A small RTP port range starting at a free even port (parallel runs rarely collide)."""
    low = free_udp_port() & ~1
    low = max(20000, min(low, 60000))
    return low, low + 200


@contextmanager
def hardened_phone(
    handler: Callable[[Any], None] | None,
    *,
    kamailio: Kamailio | None = None,
    username: str = "1000",
    password: str = "",
    **kwargs: Any,
) -> Iterator[patches.HardenedVoIPPhone]:
    low, high = rtp_range()
    server = kamailio.address if kamailio is not None else ("127.0.0.1", 5060)
    phone = patches.HardenedVoIPPhone(
        server[0],
        server[1],
        username,
        password,
        myIP="127.0.0.1",
        callCallback=handler,
        sipPort=0,
        rtpPortLow=low,
        rtpPortHigh=high,
        register=kamailio is not None,
        **kwargs,
    )
    phone.start()
    try:
        yield phone
    finally:
        phone.stop()


@contextmanager
def stock_phone(
    handler: Callable[[Any], None] | None, kamailio: Kamailio, *, username: str = "1000", expires: int | None = None
) -> Iterator[Any]:
    """Stock pyVoIP 1.6.8 VoIPPhone registered to kamailio (stock needs a registrar to run at all)."""
    low, high = rtp_range()
    phone = VoIPPhone(
        kamailio.host,
        kamailio.port,
        username,
        "",
        myIP="127.0.0.1",
        callCallback=handler,
        sipPort=free_udp_port(),
        rtpPortLow=low,
        rtpPortHigh=high,
    )
    phone.sip.register_timeout = 3
    if expires is not None:
        phone.sip.default_expires = expires
    phone.start()
    try:
        yield phone
    finally:
        phone.sip.register_timeout = 1
        try:
            phone.stop()
        except Exception:  # stock stop() can raise on its own half-dead sockets
            pass
        stop_stray_stock_rtp()


def stop_stray_stock_rtp() -> None:
    """End stock RTP threads that stock ``stop()`` leaves running (non-daemon: they block exit).

    Stock starts RTP before sending its 200 OK; when that send fails (the phone already gave up),
    the call never becomes ANSWERED, ``stop()`` skips it and its RTP Timer threads loop forever.
    """
    stock_client = patches.import_pyvoip()[2].RTPClient
    for thread in threading.enumerate():
        owner = getattr(getattr(thread, "function", None), "__self__", None)
        if isinstance(owner, stock_client) and not isinstance(owner, patches.HardenedRTPClient):
            owner.NSD = False
