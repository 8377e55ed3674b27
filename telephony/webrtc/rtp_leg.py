"""The gateway's G.711 RTP leg toward the telephony backend, on the WebRTC asyncio loop.

Audio frames are sent as they arrive from the browser (already 20 ms apart), so this leg adds no
buffering of its own. RFC 4733 telephone-events carry keypad digits toward the caller: one event
per digit, a packet every 20 ms with a growing duration, then three end packets, all with the
timestamp the event began at; audio frames are held back while an event plays.
"""

from __future__ import annotations

import asyncio
import audioop
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from telephony.audio import FRAME_SAMPLES, PCMA, PCMU

_HEADER = struct.Struct("!BBHII")
DTMF_EVENTS = {d: i for i, d in enumerate("0123456789*#ABCD")}
RECEIVE_BUFFER = 256 * 1024
DIGIT_MS = 100
GAP_MS = 60


@dataclass
class LegStats:
    sent: int = 0
    received: int = 0
    dropped: int = 0
    events_sent: int = 0


class RtpLeg(asyncio.DatagramProtocol):
    """One UDP socket; ``on_audio`` gets each received frame as μ-law (A-law is converted)."""

    def __init__(self, on_audio: Callable[[bytes], None], event_pt: int = 101) -> None:
        self.on_audio = on_audio
        self.payload_type = PCMU
        self.event_pt = event_pt
        self.remote: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.stats = LegStats()
        self._ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._marker = True
        self._digits: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        self._in_event = False
        self._dtmf_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, host: str, on_audio: Callable[[bytes], None]) -> RtpLeg:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        # Room for ~2 s of frames, so a loop stalled by a busy machine delays audio instead of losing it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.bind((host, 0))
        sock.setblocking(False)
        _, proto = await loop.create_datagram_endpoint(lambda: cls(on_audio), sock=sock)
        return proto

    @property
    def local_port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport here

    def close(self) -> None:
        if self._dtmf_task is not None:
            self._dtmf_task.cancel()
        if self.transport is not None:
            self.transport.close()

    # ---- sending ------------------------------------------------------------------------------
    def _send(self, payload: bytes, pt: int, *, marker: bool = False, timestamp: int | None = None) -> None:
        if self.remote is None or self.transport is None or self.transport.is_closing():
            return
        ts = self._ts if timestamp is None else timestamp
        header = _HEADER.pack(0x80, (0x80 if marker else 0) | pt, self._seq & 0xFFFF, ts & 0xFFFFFFFF,
                              self._ssrc)
        self._seq += 1
        self.transport.sendto(header + payload, self.remote)
        self.stats.sent += 1

    def send_audio(self, ulaw: bytes) -> None:
        """One 20 ms μ-law frame toward the backend (converted if the leg negotiated A-law)."""
        if self._in_event:
            self._ts += FRAME_SAMPLES  # keep time moving; the event stands in for the audio
            return
        payload = ulaw if self.payload_type == PCMU else audioop.lin2alaw(audioop.ulaw2lin(ulaw, 2), 2)
        self._send(payload, self.payload_type, marker=self._marker)
        self._marker = False
        self._ts += FRAME_SAMPLES

    def send_digits(self, digits: str) -> None:
        for d in digits:
            if d not in DTMF_EVENTS:
                raise ValueError(f"keypad digit {d!r}: use 0-9, *, #, A-D")
        for d in digits:
            self._digits.put_nowait(d)
        if self._dtmf_task is None or self._dtmf_task.done():
            self._dtmf_task = asyncio.get_running_loop().create_task(self._play_digits())

    async def _play_digits(self) -> None:
        while not self._digits.empty():
            digit = self._digits.get_nowait()
            event = DTMF_EVENTS[digit]
            start = self._ts
            self._in_event = True
            try:
                steps = DIGIT_MS // 20
                for i in range(1, steps + 1):
                    payload = struct.pack("!BBH", event, 10, i * FRAME_SAMPLES)
                    self._send(payload, self.event_pt, marker=i == 1, timestamp=start)
                    await asyncio.sleep(0.020)
                end = struct.pack("!BBH", event, 0x80 | 10, steps * FRAME_SAMPLES)
                for _ in range(3):  # RFC 4733 §2.5.1.4: the end packet is sent three times
                    self._send(end, self.event_pt, timestamp=start)
                self.stats.events_sent += 1
            finally:
                self._in_event = False
                self._ts = max(self._ts, start + (DIGIT_MS // 20) * FRAME_SAMPLES)
            await asyncio.sleep(GAP_MS / 1000)

    # ---- receiving ----------------------------------------------------------------------------
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            self.stats.dropped += 1
            return
        first, pt = data[0], data[1] & 0x7F
        offset = 12 + 4 * (first & 0x0F)
        if first & 0x10:
            if len(data) < offset + 4:
                self.stats.dropped += 1
                return
            offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
        payload = data[offset:]
        if first & 0x20 and payload:
            payload = payload[: -payload[-1]] if payload[-1] <= len(payload) else b""
        if pt == PCMU:
            pass
        elif pt == PCMA:
            payload = audioop.lin2ulaw(audioop.alaw2lin(payload, 2), 2)
        else:
            return  # telephone-events and comfort noise from the backend are not for the browser
        if not payload:
            self.stats.dropped += 1
            return
        self.stats.received += 1
        self.on_audio(payload)

    def error_received(self, exc: Exception) -> None:
        self.stats.dropped += 1
