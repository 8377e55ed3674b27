"""Pieces of the WebRTC browser tests: a platform with the SIP endpoint behind the WebRTC gateway,
the console on a loopback port, Debian's chromium with a fake microphone file, speech WAVs from
espeak-ng, a caller RTP sink that keeps the audio, and loudness-envelope correlation."""

from __future__ import annotations

import audioop
import math
import subprocess
import threading
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from callcentre.db.models import Queue
from tests.peers import require_binary
from tests.sipp import RtpSink

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
]
WINDOW_S = 0.1


def speech_wav(text: str, out: Path, rate: int, *, ulaw: bool = False, pad_s: float = 0.6) -> Path:
    """espeak-ng speech, padded with silence, as a mono WAV at ``rate`` (μ-law for sipp)."""
    espeak = require_binary("espeak-ng", "/usr/bin/espeak-ng")
    sox = require_binary("sox", "/usr/bin/sox")
    raw = out.with_suffix(".raw.wav")
    subprocess.run([espeak, "-v", "en", "-s", "150", "-w", str(raw), text], check=True, timeout=30)
    encoding = ["-e", "u-law"] if ulaw else ["-e", "signed-integer", "-b", "16"]
    subprocess.run([sox, str(raw), "-r", str(rate), "-c", "1", *encoding, str(out), "pad", "0", str(pad_s)],
                   check=True, timeout=30)
    return out


def wav_envelope(path: Path, window_s: float = WINDOW_S) -> list[float]:
    with wave.open(str(path), "rb") as w:
        rate, width, data = w.getframerate(), w.getsampwidth(), w.readframes(w.getnframes())
    if w.getcomptype() != "NONE" or width == 1:
        raise ValueError("use a linear PCM WAV here")
    pcm = audioop.lin2lin(data, width, 2)
    step = int(rate * window_s) * 2
    return [audioop.rms(pcm[i : i + step], 2) for i in range(0, len(pcm) - step + 1, step)]


def ulaw_wav_envelope(path: Path, window_s: float = WINDOW_S) -> list[float]:
    """sox writes μ-law WAVs that Python's wave module cannot read; decode the data chunk by hand."""
    data = path.read_bytes()
    idx = data.find(b"data")
    payload = data[idx + 8 :]
    pcm = audioop.ulaw2lin(payload, 2)
    step = int(8000 * window_s) * 2
    return [audioop.rms(pcm[i : i + step], 2) for i in range(0, len(pcm) - step + 1, step)]


def best_correlation(received: list[float], source: list[float]) -> float:
    """Highest normalised correlation of ``received`` with the looped ``source`` over all lags."""
    n = len(received)
    if n < 10 or len(source) < 10:
        return 0.0
    looped = source * (n // len(source) + 2)

    def norm(xs: list[float]) -> list[float]:
        mean = sum(xs) / len(xs)
        dev = math.sqrt(sum((x - mean) ** 2 for x in xs)) or 1.0
        return [(x - mean) / dev for x in xs]

    r = norm(received)
    best = -1.0
    for lag in range(len(source)):
        s = norm(looped[lag : lag + n])
        best = max(best, sum(a * b for a, b in zip(r, s, strict=True)))
    return best


@dataclass
class RecordingSink(RtpSink):
    """The caller's RTP sink, also keeping (arrival time, μ-law payload) of every audio packet."""

    frames: list[tuple[float, bytes]] = field(default_factory=list)
    events: list[tuple[int, int]] = field(default_factory=list)
    """RFC 4733 telephone-events received: (RTP timestamp, event code)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_packet(self, data: bytes, now: float) -> None:
        if len(data) >= 16 and data[1] & 0x7F == 101:
            with self._lock:
                self.events.append((int.from_bytes(data[4:8], "big"), data[12]))
            return
        if len(data) > 12 and data[1] & 0x7F == 0:
            with self._lock:
                self.frames.append((now, data[12:]))
            self.packets += 1

    def digits(self) -> str:
        """One key per event (all packets of an event share its timestamp)."""
        keys, seen = "", set()
        with self._lock:
            events = list(self.events)
        for ts, code in events:
            if ts not in seen:
                seen.add(ts)
                keys += "0123456789*#ABCD"[code] if code < 16 else "?"
        return keys

    def envelope_between(self, start: float, end: float, window_s: float = WINDOW_S) -> list[float]:
        with self._lock:
            pcm = b"".join(audioop.ulaw2lin(p, 2) for t, p in self.frames if start <= t <= end)
        step = int(8000 * window_s) * 2
        return [audioop.rms(pcm[i : i + step], 2) for i in range(0, len(pcm) - step + 1, step)]


def best_segment_correlation(received: list[float], source: list[float], length: int = 50, step: int = 10) -> float:
    """The best correlation of any ``length``-window stretch (5 s) of ``received`` with the looped source:
    a whole-call recording jumps in phase where one agent leaves and the next joins."""
    if len(received) <= length:
        return best_correlation(received, source)
    return max(best_correlation(received[i : i + length], source)
               for i in range(0, len(received) - length + 1, step))


def browser_envelope(trace: list[list[float]], start_ms: float, end_ms: float) -> list[float]:
    """The page's loudness trace binned by its timestamps into ``WINDOW_S`` windows (a late timer in
    a busy browser then shifts nothing); an empty bin repeats the previous value."""
    width = WINDOW_S * 1000
    bins: list[list[float]] = [[] for _ in range(int((end_ms - start_ms) // width))]
    for t, rms in trace:
        k = int((t - start_ms) // width)
        if 0 <= k < len(bins):
            bins[k].append(rms)
    out: list[float] = []
    for b in bins:
        out.append(sum(b) / len(b) if b else (out[-1] if out else 0.0))
    return out


def stereo_envelopes(path: Path, window_s: float = WINDOW_S) -> tuple[list[float], list[float]]:
    """Loudness envelopes of the left (caller) and right (agent) channels of a 16-bit stereo WAV."""
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 2 and w.getsampwidth() == 2
        rate, data = w.getframerate(), w.readframes(w.getnframes())
    left, right = audioop.tomono(data, 2, 1, 0), audioop.tomono(data, 2, 0, 1)
    step = int(rate * window_s) * 2

    def env(pcm: bytes) -> list[float]:
        return [audioop.rms(pcm[i : i + step], 2) for i in range(0, len(pcm) - step + 1, step)]

    return env(left), env(right)


def queue_id(factory: Any, name: str) -> int:
    with factory() as db:
        found = db.scalar(select(Queue.id).where(Queue.name == name))
        assert found is not None
        return int(found)
