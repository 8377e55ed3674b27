"""Hardened RTP: A-law that is A-law (defect 1), bounded audio buffers (defect 6), robust threads.

Stock 1.6.8 ``RTPClient``:

* ``encode_packet`` encodes PCMA with ``encode_pcmu`` — the far end hears μ-law bytes decoded as
  A-law (loud distortion);
* ``RTPPacketManager`` keeps every received payload twice (a ``BytesIO`` that only grows and a
  ``log`` dict keyed by timestamp) — ~79 MB per call-hour, never released while the call lives;
* a short or odd datagram (``IndexError`` in the parser, telephone-event > 15) kills the receive
  thread, and the receive loop polls a non-blocking socket every 10 ms even when idle;
* the sender sleeps ``20 ms - time spent`` after each packet, so its lateness accumulates.

:class:`HardenedRTPClient` keeps the stock audio API (8-bit unsigned linear, 160 bytes = 20 ms,
``read``/``write``), and adds ``clear_output()`` (stop a prompt, e.g. on barge-in) and
``pending_output_seconds`` (how much queued audio has not been sent yet).
"""

from __future__ import annotations

import errno
import logging
import random
import socket
import struct
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from telephony.pyvoip_patches.version import import_pyvoip

with warnings.catch_warnings():  # audioop is deprecated in 3.11-3.12 (audioop-lts on 3.13)
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

_voip, _sip, _rtp = import_pyvoip()
RTPClient = _rtp.RTPClient
RTPParseError = _rtp.RTPParseError
PayloadType = _rtp.PayloadType

log = logging.getLogger(__name__)

SILENCE = 0x80
"""Silence in pyVoIP's 8-bit unsigned linear audio."""
FRAME_BYTES = 160
FRAME_SECONDS = 0.02
DTMF_KEYS = "0123456789*#ABCD"
_HALF = 1 << 31
_WRAP = 1 << 32


class BoundedAudioBuffer:
    """Received audio, placed by RTP timestamp, holding at most ``max_bytes`` unread bytes.

    Read audio is freed at once; when the reader falls behind, the oldest unread audio is dropped
    (a caller's voice from minutes ago is worthless to a live call). Late packets for audio already
    read are dropped; a timestamp jump of more than ``max_bytes`` (new stream, SSRC change)
    restarts the buffer rather than allocating the gap.
    """

    def __init__(self, max_bytes: int = 8000 * 2) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._start: int | None = None  # RTP timestamp of self._buf[0] (== next byte to read)
        self._lock = threading.Lock()
        self.dropped_bytes = 0

    def __len__(self) -> int:
        return len(self._buf)

    def write(self, offset: int, data: bytes) -> None:
        with self._lock:
            if self._start is None:
                self._start = offset
            rel = (offset - self._start) % _WRAP
            if rel >= _HALF:
                rel -= _WRAP
            if rel < -self.max_bytes or rel > self.max_bytes * 4:
                self._buf.clear()
                self._start = offset
                rel = 0
            if rel < 0:
                data = data[-rel:]  # part of it was already read
                rel = 0
                if not data:
                    return
            end = rel + len(data)
            if end > len(self._buf):
                self._buf.extend(bytes([SILENCE]) * (end - len(self._buf)))
            self._buf[rel:end] = data
            excess = len(self._buf) - self.max_bytes
            if excess > 0:
                del self._buf[:excess]
                self._start = (self._start + excess) % _WRAP
                self.dropped_bytes += excess

    def read(self, length: int = FRAME_BYTES) -> bytes:
        with self._lock:
            packet = bytes(self._buf[:length])
            del self._buf[: len(packet)]
            if self._start is not None:
                self._start = (self._start + len(packet)) % _WRAP
        if len(packet) < length:
            packet += bytes([SILENCE]) * (length - len(packet))
        return packet


class OutboundAudioQueue:
    """Audio waiting to be sent: appended by the application, consumed 160 bytes per 20 ms.

    Sent audio is freed at once. ``max_bytes`` (default 10 minutes) caps what a runaway writer can
    queue; beyond it the oldest queued audio is dropped.
    """

    def __init__(self, max_bytes: int = 8000 * 600) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._lock = threading.Lock()
        self.dropped_bytes = 0

    def __len__(self) -> int:
        return len(self._buf)

    def write(self, offset: int, data: bytes) -> None:
        del offset  # stock signature; the queue is strictly in order
        with self._lock:
            self._buf.extend(data)
            excess = len(self._buf) - self.max_bytes
            if excess > 0:
                del self._buf[:excess]
                self.dropped_bytes += excess

    def read(self, length: int = FRAME_BYTES) -> bytes:
        with self._lock:
            packet = bytes(self._buf[:length])
            del self._buf[:length]
        if len(packet) < length:
            packet += bytes([SILENCE]) * (length - len(packet))
        return packet

    def clear(self) -> None:
        with self._lock:
            self._buf.clear()


class HardenedRTPClient(RTPClient):  # type: ignore[misc, valid-type]
    """pyVoIP's RTPClient with the fixes in the module docstring."""

    def __init__(
        self,
        assoc: dict[int, Any],
        inIP: str,
        inPort: int,
        outIP: str,
        outPort: int,
        sendrecv: Any,
        dtmf: Callable[[str], None] | None = None,
        *,
        sock: socket.socket | None = None,
        inbound_buffer_bytes: int = 8000 * 2,
    ) -> None:
        super().__init__(assoc, inIP, inPort, outIP, outPort, sendrecv, dtmf=dtmf)
        self.pmin = BoundedAudioBuffer(inbound_buffer_bytes)
        self.pmout = OutboundAudioQueue()
        self._send_pt: int | None = None
        for pt, kind in assoc.items():
            if kind in (PayloadType.PCMU, PayloadType.PCMA):
                self.preference = kind
                self._send_pt = pt
                break
        self._reserved_sock = sock
        self._threads: list[threading.Thread] = []
        self._last_event_ts: int | None = None
        self.packets_received = 0
        self.packets_sent = 0
        self.packets_dropped = 0

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return  # stock gen_ms() calls start() on every (re)negotiation
        sock = self._reserved_sock
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((self.inIP, self.inPort))
        # A blocking read with a timeout wakes only for packets (or to notice stop()).
        sock.settimeout(0.25)
        self.sin = self.sout = sock
        for name, target in (("rx", self.recv), ("tx", self.trans)):
            thread = threading.Thread(target=target, name=f"RTP {name} {self.inPort}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self.NSD = False
        sock = getattr(self, "sin", None) or self._reserved_sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv() at once (Linux)
            except OSError:
                pass
            sock.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=1.0)

    @property
    def pending_output_seconds(self) -> float:
        return len(self.pmout) / 8000

    def clear_output(self) -> None:
        """Drop queued audio not yet sent (stop the current prompt)."""
        self.pmout.clear()

    # -- receiving -----------------------------------------------------------------------------

    def recv(self) -> None:
        while self.NSD:
            try:
                packet = self.sin.recv(2048)
            except TimeoutError:
                continue
            except OSError as exc:
                if not self.NSD or exc.errno == errno.EBADF:
                    break
                continue
            if not packet and not self.NSD:
                break
            try:
                self.parse_packet(packet)
                self.packets_received += 1
            except Exception:  # a bad datagram must never end the receive thread
                self.packets_dropped += 1

    def parse_packet(self, packet: bytes) -> None:
        if len(packet) < 12 or packet[0] >> 6 != 2:
            raise RTPParseError("not an RTP v2 packet")
        first, second = packet[0], packet[1]
        marker = bool(second & 0x80)
        pt = second & 0x7F
        timestamp = struct.unpack_from("!I", packet, 4)[0]
        offset = 12 + 4 * (first & 0x0F)
        if first & 0x10:  # header extension: 16-bit profile, 16-bit length in words
            if len(packet) < offset + 4:
                raise RTPParseError("truncated extension")
            offset += 4 + 4 * struct.unpack_from("!H", packet, offset + 2)[0]
        end = len(packet)
        if first & 0x20 and end > offset:
            end -= packet[-1]
        payload = packet[offset:end]
        kind = self.assoc.get(pt)
        if kind == PayloadType.PCMU:
            self.pmin.write(timestamp, audioop.bias(audioop.ulaw2lin(payload, 1), 1, 128))
        elif kind == PayloadType.PCMA:
            self.pmin.write(timestamp, audioop.bias(audioop.alaw2lin(payload, 1), 1, 128))
        elif kind == PayloadType.EVENT:
            self._telephone_event(timestamp, marker, payload)
        else:
            raise RTPParseError(f"payload type {pt} was not negotiated")

    def _telephone_event(self, timestamp: int, marker: bool, payload: bytes) -> None:
        if len(payload) < 4 or payload[0] >= len(DTMF_KEYS):
            raise RTPParseError("malformed telephone-event")
        # RFC 4733: all packets of one event share its timestamp; the marker bit may be missing or
        # lost, and end packets are sent three times, so one digit == one new timestamp.
        del marker
        if timestamp == self._last_event_ts:
            return
        self._last_event_ts = timestamp
        if self.dtmf is not None:
            self.dtmf(DTMF_KEYS[payload[0]])

    # -- sending -------------------------------------------------------------------------------

    def encode_packet(self, payload: bytes) -> bytes:
        if self.preference == PayloadType.PCMA:
            return bytes(self.encode_pcma(payload))  # stock: encode_pcmu (defect 1)
        if self.preference == PayloadType.PCMU:
            return bytes(self.encode_pcmu(payload))
        raise RTPParseError(f"Unsupported codec (encode): {self.preference}")

    def trans(self) -> None:
        if self._send_pt is None:
            return
        sequence = random.randint(0, 0xFFFF)
        timestamp = random.randint(0, 0xFFFFFFFF)
        ssrc = random.randint(1, 0xFFFFFFFF)
        due = time.monotonic()
        while self.NSD:
            payload = self.encode_packet(self.pmout.read(FRAME_BYTES))
            header = struct.pack("!BBHII", 0x80, self._send_pt, sequence, timestamp, ssrc)
            try:
                self.sout.sendto(header + payload, (self.outIP, self.outPort))
                self.packets_sent += 1
            except OSError:
                if not self.NSD:
                    break
            sequence = (sequence + 1) & 0xFFFF
            timestamp = (timestamp + len(payload)) & 0xFFFFFFFF
            # An absolute schedule: lateness of one packet is not carried into the next.
            due += FRAME_SECONDS
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.2:
                due = time.monotonic()  # after a long stall, resynchronise instead of bursting
