"""Defects 1 (PCMA sent as μ-law) and 6 (unbounded audio buffer), and RTP robustness.

The RTP clients run on real UDP sockets on 127.0.0.1; packets are built by hand so the bytes on
the wire are exactly known. The stock and hardened clients get the same input.
"""

from __future__ import annotations

import math
import socket
import struct
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from telephony.pyvoip_patches import BoundedAudioBuffer, HardenedRTPClient, import_pyvoip
from tests.integration.pyvoip_support import hardened_phone, raw_peer, sdp_offer, stock_phone
from tests.kamailio import Kamailio, free_udp_port, kamailio_fixture  # noqa: F401  (the kamailio fixture)

with warnings.catch_warnings():  # audioop is deprecated in 3.11-3.12 (audioop-lts on 3.13)
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

_voip, _sip, _rtp = import_pyvoip()
PCMA_ONLY = "a=rtpmap:8 PCMA/8000\r\n"

# 20 ms of a 440 Hz tone in pyVoIP's audio format (8-bit unsigned linear).
TONE = bytes(128 + int(100 * math.sin(2 * math.pi * 440 * n / 8000)) for n in range(160))


def alaw(frame: bytes) -> bytes:
    return audioop.lin2alaw(audioop.bias(frame, 1, -128), 1)


def ulaw(frame: bytes) -> bytes:
    return audioop.lin2ulaw(audioop.bias(frame, 1, -128), 1)


def heard(frame: bytes) -> bytes:
    """What a receiver gets back from ``frame`` after a μ-law round trip (μ-law is lossy)."""
    return audioop.bias(audioop.ulaw2lin(ulaw(frame), 1), 1, 128)


def rtp_packet(pt: int, seq: int, ts: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq, ts, 0x1234) + payload


def dtmf_packets(digit: int, ts: int, seq: int) -> list[bytes]:
    """One RFC 4733 event: start (marker), two updates, three end packets — all one timestamp."""

    def event(end: bool, duration: int) -> bytes:
        return bytes([digit, (0x80 if end else 0) | 10]) + struct.pack("!H", duration)

    packets = [rtp_packet(101, seq, ts, event(False, 160), marker=True)]
    packets += [rtp_packet(101, seq + i, ts, event(False, 160 * (i + 1))) for i in (1, 2)]
    packets += [rtp_packet(101, seq + i, ts, event(True, 800)) for i in (3, 4, 5)]
    return packets


# -- defect 1: PCMA -----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ["stock", "hardened"])
def test_pcma_encoding(cls: str) -> None:
    kind = _rtp.RTPClient if cls == "stock" else HardenedRTPClient
    client = kind({8: _rtp.PayloadType.PCMA}, "127.0.0.1", 0, "127.0.0.1", 9, _rtp.TransmitType.SENDRECV)
    encoded = client.encode_packet(TONE)
    if cls == "stock":
        assert encoded == ulaw(TONE) and encoded != alaw(TONE)  # the defect: μ-law bytes labelled PCMA
    else:
        assert encoded == alaw(TONE)


def tone_writer(calls: list[Any]) -> Any:
    def handler(call: Any) -> None:
        calls.append(call)
        call.answer()
        call.write_audio(TONE * 25)  # half a second
        time.sleep(1.0)

    return handler


def received_payloads(rtp: socket.socket, seconds: float) -> list[tuple[int, bytes]]:
    rtp.settimeout(0.1)
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            packet = rtp.recv(2048)
        except TimeoutError:
            continue
        got.append((packet[1] & 0x7F, packet[12:]))
    return got


@pytest.mark.peer
def test_stock_phone_sends_ulaw_bytes_as_pcma(kamailio: Kamailio) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
        rtp.bind(("127.0.0.1", 0))
        port = rtp.getsockname()[1]
        with stock_phone(tone_writer([]), kamailio) as _phone, raw_peer() as caller:
            dialogue = caller.invite("1000", kamailio.address, sdp=sdp_offer(port, "8", PCMA_ONLY))
            ok = dialogue.response(200, timeout=4)
            assert ok is not None
            dialogue.ack(ok)
            packets = received_payloads(rtp, 0.8)
    assert packets and {pt for pt, _ in packets} == {8}
    payloads = {payload for _, payload in packets}
    assert ulaw(TONE) in payloads and alaw(TONE) not in payloads


@pytest.mark.peer
def test_hardened_phone_sends_real_alaw() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
        rtp.bind(("127.0.0.1", 0))
        port = rtp.getsockname()[1]
        with hardened_phone(tone_writer([])) as phone, raw_peer() as caller:
            dialogue = caller.invite("1000", ("127.0.0.1", phone.sip_port), sdp=sdp_offer(port, "8", PCMA_ONLY))
            ok = dialogue.response(200)
            assert ok is not None and "RTP/AVP 8" in ok.body and "PCMA/8000" in ok.body
            dialogue.ack(ok)
            packets = received_payloads(rtp, 0.8)
    assert packets and {pt for pt, _ in packets} == {8}
    payloads = [payload for _, payload in packets]
    assert payloads.count(alaw(TONE)) >= 20 and ulaw(TONE) not in payloads


# -- defect 6: the inbound buffer ---------------------------------------------------------------

MINUTES = 5
PACKETS = MINUTES * 60 * 50  # 20 ms packets


def buffered_bytes(client: Any) -> int:
    pm = client.pmin
    if isinstance(pm, BoundedAudioBuffer):
        return len(pm)
    return pm.buffer.getbuffer().nbytes + sum(len(v) for v in pm.log.values())


@pytest.mark.parametrize("cls", ["stock", "hardened"])
def test_inbound_audio_buffer_over_five_minutes(cls: str) -> None:
    """Five minutes of caller audio in compressed time, read by the application as it arrives."""
    kind = _rtp.RTPClient if cls == "stock" else HardenedRTPClient
    client = kind({0: _rtp.PayloadType.PCMU}, "127.0.0.1", 0, "127.0.0.1", 9, _rtp.TransmitType.SENDRECV)
    payload = ulaw(TONE)
    peak = 0
    for n in range(PACKETS):
        client.parse_packet(rtp_packet(0, n & 0xFFFF, 1000 + 160 * n, payload))
        assert client.read(160, blocking=False) == heard(TONE)  # the reader keeps up, frame for frame
        if n % 1000 == 0:
            peak = max(peak, buffered_bytes(client))
    final = buffered_bytes(client)
    if cls == "stock":
        # Every byte is kept twice (BytesIO + log dict) though all of it has been read.
        assert final >= 2 * PACKETS * 160
        assert final / MINUTES * 60 > 50_000_000  # > 50 MB per call-hour
    else:
        assert peak <= 320 and final == 0


def test_hardened_buffer_is_bounded_when_nobody_reads() -> None:
    client = HardenedRTPClient({0: _rtp.PayloadType.PCMU}, "127.0.0.1", 0, "127.0.0.1", 9, _rtp.TransmitType.SENDRECV)
    for n in range(PACKETS):
        client.parse_packet(rtp_packet(0, n & 0xFFFF, 1000 + 160 * n, ulaw(TONE)))
    assert len(client.pmin) == client.pmin.max_bytes == 16000  # the newest 2 s
    assert client.read(160, blocking=False) == heard(TONE)


# -- robustness: a bad packet must not end the receive thread ----------------------------------

BAD_PACKETS = [b"\x80", b"", b"\x00" * 40, rtp_packet(101, 1, 5, bytes([200, 0, 0, 0])), rtp_packet(99, 1, 5, b"x")]


@contextmanager
def running(client: Any) -> Iterator[Any]:
    client.start()
    try:
        yield client
    finally:
        client.stop()


@pytest.mark.parametrize("cls", ["stock", "hardened"])
def test_bad_rtp_packets_then_dtmf(cls: str) -> None:
    digits: list[str] = []
    kind = _rtp.RTPClient if cls == "stock" else HardenedRTPClient
    port = free_udp_port()
    assoc = {0: _rtp.PayloadType.PCMU, 101: _rtp.PayloadType.EVENT}
    crashed: list[str] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: crashed.append(args.thread.name if args.thread else "?")
    try:
        with (
            running(
                kind(
                    assoc,
                    "127.0.0.1",
                    port,
                    "127.0.0.1",
                    free_udp_port(),
                    _rtp.TransmitType.SENDRECV,
                    dtmf=digits.append,
                )
            ),
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        ):
            for packet in BAD_PACKETS:
                sender.sendto(packet, ("127.0.0.1", port))
            time.sleep(0.2)
            for packet in dtmf_packets(5, 8000, 10) + dtmf_packets(11, 9600, 20):
                sender.sendto(packet, ("127.0.0.1", port))
                time.sleep(0.005)
            time.sleep(0.3)
    finally:
        threading.excepthook = previous
    if cls == "stock":
        assert "RTP Receiver" in crashed and digits == []
    else:
        assert crashed == [] and digits == ["5", "#"]


def test_hardened_dtmf_without_marker_bit_counts_each_event_once() -> None:
    digits: list[str] = []
    client = HardenedRTPClient(
        {101: _rtp.PayloadType.EVENT}, "127.0.0.1", 0, "127.0.0.1", 9, _rtp.TransmitType.SENDRECV, dtmf=digits.append
    )
    for packet in dtmf_packets(1, 100, 1)[1:] + dtmf_packets(2, 900, 10) + dtmf_packets(2, 1700, 20):
        client.parse_packet(packet)
    assert digits == ["1", "2", "2"]
