"""Bad input at the embedded SIP endpoint: always an error response or a silent drop, never a crash.

Precise malformed datagrams come from a raw UDP socket on loopback; the CANCEL case is a real sipp
call. After every abuse the endpoint must still answer OPTIONS and take a good call.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from callcentre.domain.events import CallArrived, CallEnded, CallHungUp
from callcentre.settings import Settings
from tests.integration.sip_fixtures import (
    CALLER_UNKNOWN,
    RunningPlatform,
    calls_show,
    seed_customers,
    sip_platform_fixture,  # noqa: F401  (fixture "sip_platform")
    sip_settings_fixture,  # noqa: F401  (fixture "sip_settings")
    start_platform,
    workdir,
)
from tests.sipp import RtpSink, SippRun, render_scenario

pytestmark = [pytest.mark.peer]


class RawPeer:
    """A bare UDP socket speaking SIP by hand."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2.0)
        self.port = self.sock.getsockname()[1]

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.target)

    def responses(self, wait: float = 1.0, until_final: bool = True) -> list[str]:
        """What arrives within ``wait`` s; by default stop early, shortly after a final response."""
        out: list[str] = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                break
            text = data.decode(errors="replace")
            out.append(text)
            if until_final and text.startswith("SIP/2.0 ") and text[8:9] in "23456":
                deadline = min(deadline, time.monotonic() + 0.05)
        return out

    def request(self, method: str, uri: str, body: str = "", call_id: str | None = None,
                extra: str = "", cseq: int = 1) -> bytes:
        call_id = call_id or uuid.uuid4().hex
        head = (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\r\n"
            f"From: <sip:{CALLER_UNKNOWN}@127.0.0.1:{self.port}>;tag=raw{self.port}\r\n"
            f"To: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:{CALLER_UNKNOWN}@127.0.0.1:{self.port}>\r\nMax-Forwards: 70\r\n{extra}"
        )
        if body:
            head += "Content-Type: application/sdp\r\n"
        return (head + f"Content-Length: {len(body)}\r\n\r\n" + body).encode()

    def close(self) -> None:
        self.sock.close()


def sdp(payloads: str, rtpmaps: str, port: int = 40000) -> str:
    return (f"v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP {payloads}\r\n{rtpmaps}")


def status_codes(responses: list[str]) -> list[int]:
    return [int(r.split(" ", 2)[1]) for r in responses if r.startswith("SIP/2.0 ")]


@pytest.fixture
def peer(sip_platform: RunningPlatform) -> Iterator[RawPeer]:
    p = RawPeer(sip_platform.backend.address)
    yield p
    p.close()


def uri(running: RunningPlatform, number: str = "1000") -> str:
    host, port = running.backend.address
    return f"sip:{number}@{host}:{port}"


def assert_still_serving(running: RunningPlatform, peer: RawPeer) -> None:
    peer.send(peer.request("OPTIONS", uri(running)))
    assert 200 in status_codes(peer.responses(1.0))


def test_unknown_number_gets_404(sip_platform: RunningPlatform, peer: RawPeer) -> None:
    peer.send(peer.request("INVITE", uri(sip_platform, "9999"), sdp("0", "a=rtpmap:0 PCMU/8000\r\n")))
    codes = status_codes(peer.responses())
    assert codes and codes[-1] == 404
    assert not sip_platform.log.of(CallArrived)


def test_unsupported_codecs_get_488(sip_platform: RunningPlatform, peer: RawPeer) -> None:
    peer.send(peer.request("INVITE", uri(sip_platform), sdp("18 9", "a=rtpmap:18 G729/8000\r\n")))
    codes = status_codes(peer.responses())
    assert codes and codes[-1] == 488
    assert not sip_platform.log.of(CallArrived)


def test_rtpmap_for_payload_not_on_m_line_is_tolerated(sip_platform: RunningPlatform, peer: RawPeer) -> None:
    """Stock pyVoIP 1.6.8 crashes parsing this SDP; we ignore the stray rtpmap and answer with PCMU."""
    call_id = uuid.uuid4().hex
    body = sdp("0 101", "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=rtpmap:96 opus/48000/2\r\n")
    peer.send(peer.request("INVITE", uri(sip_platform), body, call_id=call_id))
    responses = peer.responses(1.5)
    ok = [r for r in responses if r.startswith("SIP/2.0 200")]
    assert ok, responses
    assert "m=audio" in ok[0] and "RTP/AVP 0 101" in ok[0]
    arrived = sip_platform.log.wait_for(CallArrived)
    peer.send(peer.request("BYE", uri(sip_platform), call_id=call_id, cseq=2))
    assert 200 in status_codes(peer.responses())
    sip_platform.log.wait_for(CallHungUp, where=lambda e: e.call_id == arrived.call_id)


GARBAGE = [
    b"",
    b"\r\n\r\n",
    b"\x00\x00\x00\x00",
    os.urandom(1200),
    b"hello there",
    b"INVITE",
    b"INVITE sip:1000@127.0.0.1 SIP/2.0\r\n\r\n",  # no Via / From / To / Call-ID / CSeq
    b"SIP/2.0 999999 Nope\r\nVia: x\r\n\r\n",
    b"SIP/2.0 200 OK\r\nCall-ID: nobody\r\nCSeq: 1 INVITE\r\nVia: SIP/2.0/UDP 1.2.3.4\r\n"
    b"From: <sip:a@b>\r\nTo: <sip:c@d>\r\n\r\n",
    "INVITE sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n\u00e9\u00e9\r\n\r\n"
    .encode("latin-1"),
    b"\xff\xfe" * 30000,
]


def test_garbage_datagrams_never_crash(sip_platform: RunningPlatform, peer: RawPeer) -> None:
    for datagram in GARBAGE:
        peer.send(datagram)
    peer.responses(0.5, until_final=False)
    assert_still_serving(sip_platform, peer)
    assert sip_platform.platform.bus.errors == 0


def test_malformed_requests_get_400(sip_platform: RunningPlatform, peer: RawPeer) -> None:
    good = peer.request("INVITE", uri(sip_platform), sdp("0", "a=rtpmap:0 PCMU/8000\r\n")).decode()
    broken = [
        good.replace("CSeq: 1 INVITE", "CSeq: one INVITE"),
        good.replace("Content-Length: ", "Content-Length: x"),
        good.replace("\r\nCall-ID:", "\r\nthis line has no colon\r\nCall-ID:"),
    ]
    for text in broken:
        peer.send(text.encode())
        codes = status_codes(peer.responses(0.7))
        assert codes == [400], (text.splitlines()[0], codes)
    peer.send(peer.request("FROBNICATE", uri(sip_platform)))
    codes = status_codes(peer.responses(0.7))
    assert codes and codes[0] in (405, 501)
    assert not sip_platform.log.of(CallArrived)
    assert_still_serving(sip_platform, peer)


def test_bye_for_unknown_call_gets_481(sip_platform: RunningPlatform, peer: RawPeer) -> None:
    peer.send(peer.request("BYE", uri(sip_platform), extra="", cseq=5))
    assert status_codes(peer.responses()) == [481]


@pytest.mark.slow
def test_cancel_before_answer_gets_487_and_is_recorded_abandoned(sip_settings: Settings, tmp_path: Path) -> None:
    seed_customers(sip_settings)
    running = start_platform(sip_settings, answer_delay=3.0)  # ring 3 s before answering
    try:
        work = workdir(tmp_path, "cancel")
        sink = RtpSink().start()
        scenario = render_scenario("ivr_cancel.xml", work)
        run = SippRun(scenario, running.target, work, variables={"sinkport": str(sink.port),
                                                                  "caller": CALLER_UNKNOWN}, timeout_s=20)
        with run:
            rc = run.wait()
        assert rc == 0, run.errors()
        arrived = running.log.wait_for(CallArrived)
        hung = running.log.wait_for(CallHungUp)
        assert hung.by == "caller" and hung.cause == "cancelled"
        ended = running.log.wait_for(CallEnded)
        assert ended.outcome == "abandoned"
        time.sleep(3.0)  # past the answer delay: the cancelled call must not be answered after all
        sink.stop()
        assert sink.packets == 0
        shown = calls_show(sip_settings, arrived.call_id)
        assert shown["state"] == "ended" and shown["outcome"] == "abandoned"
        assert shown["context"]  # caller id and dialled number, kept
    finally:
        running.platform.stop()


def test_200_ok_is_retransmitted_until_the_ack(sip_platform: RunningPlatform, peer: RawPeer) -> None:
    """A lost ACK on UDP must not leave the caller without an answer (RFC 3261 §13.3.1.4)."""
    call_id = uuid.uuid4().hex
    peer.send(peer.request("INVITE", uri(sip_platform), sdp("0 101", "a=rtpmap:0 PCMU/8000\r\n"), call_id=call_id))
    first = [r for r in peer.responses(1.8, until_final=False) if r.startswith("SIP/2.0 200")]
    assert len(first) >= 2, "the 200 OK was not retransmitted while no ACK came"
    to = next(line for line in first[0].split("\r\n") if line.startswith("To:"))
    ack = peer.request("ACK", uri(sip_platform), call_id=call_id).decode()
    ack = ack.replace(next(
        line for line in ack.split("\r\n") if line.startswith("To:")), to)
    peer.send(ack.encode())
    peer.responses(0.3, until_final=False)
    assert not [r for r in peer.responses(1.5, until_final=False) if r.startswith("SIP/2.0 200")], (
        "retransmitted after the ACK")
    peer.send(peer.request("BYE", uri(sip_platform), call_id=call_id, cseq=2))
    assert 200 in status_codes(peer.responses())


def test_caller_who_vanishes_without_bye_is_ended_after_the_rtp_timeout(sip_settings: Settings) -> None:
    """No BYE and no RTP (the phone lost power, the NAT closed): don't keep a ghost call in the queue."""
    seed_customers(sip_settings)
    running = start_platform(sip_settings, rtp_timeout=1.5)
    peer = RawPeer(running.backend.address)
    try:
        call_id = uuid.uuid4().hex
        peer.send(peer.request("INVITE", uri(running), sdp("0 101", "a=rtpmap:0 PCMU/8000\r\n"), call_id=call_id))
        ok = [r for r in peer.responses(1.0) if r.startswith("SIP/2.0 200")]
        assert ok
        arrived = running.log.wait_for(CallArrived)
        hung = running.log.wait_for(CallHungUp, timeout=10)
        assert hung.call_id == arrived.call_id and hung.by == "caller" and hung.cause == "rtp-timeout"
        byes = [r for r in peer.responses(1.0, until_final=False) if r.startswith("BYE ")]
        assert byes, "no BYE sent to the vanished caller"
        assert running.log.wait_for(CallEnded).outcome == "abandoned"
    finally:
        peer.close()
        running.platform.stop()
