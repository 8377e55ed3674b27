"""Audio between the caller's G.711 frames and aiortc: the outbound track and the inbound converter.

:class:`CallerAudioTrack` is what the browser hears. aiortc pulls one frame every time it sends, so
the track paces itself on an absolute 20 ms clock and hands out the newest caller frame, or
silence between calls (the session stays up, so answering needs no renegotiation). When the
browser agreed to PCMU, the μ-law bytes go out untouched as a pre-encoded ``av.Packet`` (no
transcoding end to end); for Opus they are decoded to 16-bit PCM and aiortc's encoder resamples.

:class:`ToTelephone` turns what the browser sends (decoded by aiortc: 8 kHz for PCMU, 48 kHz stereo
for Opus) into 20 ms μ-law frames.
"""

from __future__ import annotations

import asyncio
import audioop
import collections
import fractions
import time
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from telephony.audio import FRAME_SAMPLES, SAMPLE_RATE, ULAW_SILENCE

TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
MAX_QUEUED = 10
"""Frames (200 ms) kept for the browser at most, to ride out a stalled loop; beyond, the oldest is dropped."""
TRIM_AFTER = (10, 2)
"""Pulls in a row with one spare frame queued / with more, before a *quiet* spare frame is dropped: a
backlog left by a stall drains in the pauses of speech instead of staying as delay."""
QUIET_RMS = 300


class CallerAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.passthrough = True
        """True when the browser leg is PCMU: frames leave as the caller's own μ-law bytes."""
        self._queue: collections.deque[bytes] = collections.deque(maxlen=MAX_QUEUED)
        self._start: float | None = None
        self._count = 0
        self.frames_sent = 0
        self.frames_from_caller = 0
        self.overflow = 0
        self.trimmed = 0
        self._spare_streak = 0

    def push(self, ulaw: bytes) -> None:
        """A 20 ms μ-law frame from the caller (called on the asyncio loop)."""
        if len(self._queue) == MAX_QUEUED:
            self.overflow += 1
        self._queue.append(ulaw)

    def clear(self) -> None:
        self._queue.clear()

    async def recv(self) -> av.Packet[Any] | av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError()
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            due = self._start + self._count * FRAME_SECONDS
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > 0.2:  # stalled loop: restart the clock rather than burst
                self._start, self._count = now, 0
        pts = self._count * FRAME_SAMPLES
        self._count += 1
        if len(self._queue) >= 2:
            # A backlog (a stall, clocks out of phase, drift) must not become lasting delay.
            self._spare_streak += 1
            patience = TRIM_AFTER[0] if len(self._queue) == 2 else TRIM_AFTER[1]
            if self._spare_streak >= patience and audioop.rms(audioop.ulaw2lin(self._queue[0], 2), 2) < QUIET_RMS:
                self._queue.popleft()
                self.trimmed += 1
                self._spare_streak = 0
        else:
            self._spare_streak = 0
        if self._queue:
            ulaw = self._queue.popleft()
            self.frames_from_caller += 1
        else:
            ulaw = ULAW_SILENCE
        self.frames_sent += 1
        if self.passthrough:
            packet = av.Packet(ulaw)
            packet.pts = pts
            packet.time_base = TIME_BASE
            return packet
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(audioop.ulaw2lin(ulaw, 2))
        frame.pts = pts
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = TIME_BASE
        return frame


class ToTelephone:
    """Browser audio frames → 20 ms μ-law frames (resampling Opus' 48 kHz to 8 kHz)."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self._pending = b""

    def convert(self, frame: av.AudioFrame) -> list[bytes]:
        if frame.sample_rate == SAMPLE_RATE and frame.format.name == "s16" and len(frame.layout.channels) == 1:
            pcm = bytes(frame.planes[0])[: frame.samples * 2]
        else:
            pcm = b"".join(bytes(f.planes[0])[: f.samples * 2] for f in self._resampler.resample(frame))
        data = self._pending + pcm
        size = FRAME_SAMPLES * 2
        whole = len(data) - len(data) % size
        self._pending = data[whole:]
        return [audioop.lin2ulaw(data[i : i + size], 2) for i in range(0, whole, size)]
