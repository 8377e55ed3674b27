"""Writing call recordings: stereo WAV (caller left, agent right), the IVR part, pauses, checksums.

Audio arrives as 16-bit signed little-endian PCM at 8 kHz from whichever backend carries audio
(``feed``). A paused recording keeps its timeline: paused audio is written as silence and the gap is
listed in ``Recording.pauses`` as ``{"from": s, "to": s, "why": ...}``, so transcripts' word timings
still line up with the call and a listener hears where the gap is.

Files live at ``<recordings.directory>/YYYY/MM/DD/<call id>-<kind>.wav``; the SHA-256 of each
finished file is stored with its row so tampering or corruption is detectable.
"""

from __future__ import annotations

import hashlib
import re
import threading
import warnings
import wave
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from callcentre.db.base import utcnow
from callcentre.db.models import Recording

with warnings.catch_warnings():
    # audioop is deprecated in 3.11 and gone in 3.13, where setup.py installs audioop-lts instead.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop as audioop  # re-exported for the other recordings modules

SAMPLE_RATE = 8000
SAMPLE_WIDTH = 2
MAX_SKEW_SECONDS = 1.0
"""If one leg is this far ahead of the other (the other sends no audio), the silent leg is padded."""

_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
KINDS = ("conversation", "ivr", "survey_comment")


class RecordingError(Exception):
    """A recording that cannot be written or found; the message names the call id (never audio)."""


def recording_path(directory: str | Path, call_id: str, kind: str, when: datetime | None = None) -> Path:
    """``<directory>/YYYY/MM/DD/<call_id>-<kind>.wav``; refuses ids that could escape the directory."""
    if not _SAFE_ID.match(call_id) or call_id.startswith("."):
        raise RecordingError(f"unsafe call id for a file name: {call_id!r}")
    if kind not in KINDS:
        raise RecordingError(f"unknown recording kind {kind!r}; choose one of {', '.join(KINDS)}")
    when = when or utcnow()
    return Path(directory) / f"{when:%Y}" / f"{when:%m}" / f"{when:%d}" / f"{call_id}-{kind}.wav"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def u8_to_pcm16(audio: bytes) -> bytes:
    """pyVoIP's 8-bit unsigned linear frames → 16-bit signed PCM."""
    return audioop.lin2lin(audioop.bias(audio, 1, -128), 1, 2)


@dataclass(frozen=True)
class FinishedRecording:
    path: Path
    kind: str
    channels: int
    sha256: str
    duration_seconds: float
    pauses: list[dict[str, Any]]
    started_at: datetime
    ended_at: datetime


@dataclass
class _Pause:
    start: float
    why: str


class RecordingWriter:
    """One WAV file being written. Thread-safe: legs may be fed from different threads."""

    def __init__(self, path: Path, *, channels: int, kind: str) -> None:
        if channels not in (1, 2):
            raise RecordingError(f"recordings are mono or stereo, not {channels} channels")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.kind = kind
        self.channels = channels
        self.started_at = utcnow()
        self._wav = wave.open(str(path), "wb")  # noqa: SIM115  (open for the call's lifetime)
        self._wav.setnchannels(channels)
        self._wav.setsampwidth(SAMPLE_WIDTH)
        self._wav.setframerate(SAMPLE_RATE)
        self._frames = 0
        self._legs: dict[str, bytearray] = {"caller": bytearray(), "agent": bytearray()}
        self._pause: _Pause | None = None
        self._pauses: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._closed = False

    @property
    def seconds(self) -> float:
        return self._frames / SAMPLE_RATE

    @property
    def paused(self) -> bool:
        return self._pause is not None

    def feed(self, leg: str, pcm16: bytes) -> None:
        """Append ``leg``'s audio (``caller`` or ``agent``); mono recordings keep only the caller."""
        if leg not in self._legs:
            raise RecordingError(f"unknown leg {leg!r}; expected caller or agent")
        if len(pcm16) % SAMPLE_WIDTH:
            pcm16 = pcm16[:-1]
        with self._lock:
            if self._closed or (self.channels == 1 and leg != "caller"):
                return
            if self._pause is not None:
                pcm16 = bytes(len(pcm16))  # keep the timeline, drop the content
            self._legs[leg].extend(pcm16)
            self._flush(final=False)

    def pause(self, why: str) -> None:
        with self._lock:
            if self._pause is None and not self._closed:
                self._flush(final=True)
                self._pause = _Pause(self.seconds, why)

    def resume(self) -> None:
        with self._lock:
            if self._pause is not None:
                self._flush(final=True)
                self._pauses.append({"from": round(self._pause.start, 3), "to": round(self.seconds, 3),
                                     "why": self._pause.why})
                self._pause = None

    def close(self) -> FinishedRecording:
        with self._lock:
            if not self._closed:
                self._flush(final=True)
                if self._pause is not None:
                    self._pauses.append({"from": round(self._pause.start, 3), "to": round(self.seconds, 3),
                                         "why": self._pause.why})
                    self._pause = None
                self._wav.close()
                self._closed = True
                self.ended_at = utcnow()
        return FinishedRecording(self.path, self.kind, self.channels, sha256_of(self.path), self.seconds,
                                 list(self._pauses), self.started_at, self.ended_at)

    def _flush(self, *, final: bool) -> None:
        caller, agent = self._legs["caller"], self._legs["agent"]
        if self.channels == 1:
            if caller:
                self._write(bytes(caller))
                caller.clear()
            return
        skew = int(MAX_SKEW_SECONDS * SAMPLE_RATE * SAMPLE_WIDTH)
        # A leg that sends nothing (muted phone, no RTP yet) must not hold the other one in memory.
        if final or len(caller) - len(agent) > skew:
            agent.extend(bytes(max(0, len(caller) - len(agent))))
        if final or len(agent) - len(caller) > skew:
            caller.extend(bytes(max(0, len(agent) - len(caller))))
        n = min(len(caller), len(agent))
        if n == 0:
            return
        left = audioop.tostereo(bytes(caller[:n]), SAMPLE_WIDTH, 1, 0)
        right = audioop.tostereo(bytes(agent[:n]), SAMPLE_WIDTH, 0, 1)
        self._write(audioop.add(left, right, SAMPLE_WIDTH))
        del caller[:n]
        del agent[:n]

    def _write(self, frames: bytes) -> None:
        self._wav.writeframes(frames)
        self._frames += len(frames) // (SAMPLE_WIDTH * self.channels)


def save_recording(session: Session, call_id: str, finished: FinishedRecording) -> Recording:
    """The Recording row for a finished file (caller commits)."""
    row = Recording(call_id=call_id, kind=finished.kind, path=str(finished.path), sha256=finished.sha256,
                    channels=finished.channels, sample_rate=SAMPLE_RATE, started_at=finished.started_at,
                    ended_at=finished.ended_at, duration_seconds=finished.duration_seconds,
                    pauses=finished.pauses)
    session.add(row)
    session.flush()
    return row


def verify(recording: Recording) -> bool:
    """The file exists and still has the checksum recorded when it was written."""
    path = Path(recording.path)
    return path.is_file() and sha256_of(path) == recording.sha256


@dataclass
class CallRecorder:
    """The recordings of one call: the IVR part (mono, caller) then the conversation (stereo)."""

    call_id: str
    directory: Path
    current: RecordingWriter | None = None
    finished: list[FinishedRecording] = field(default_factory=list)
    pause_reasons: list[str] = field(default_factory=list)

    def start(self, kind: str) -> RecordingWriter:
        self.stop()
        channels = 2 if kind == "conversation" else 1
        self.current = RecordingWriter(recording_path(self.directory, self.call_id, kind), channels=channels,
                                       kind=kind)
        if self.pause_reasons:  # a pause asked for before the switch still holds
            self.current.pause(self.pause_reasons[-1])
        return self.current

    def stop(self) -> None:
        if self.current is not None:
            self.finished.append(self.current.close())
            self.current = None

    def feed(self, leg: str, pcm16: bytes) -> None:
        if self.current is not None:
            self.current.feed(leg, pcm16)

    def pause(self, why: str) -> None:
        self.pause_reasons.append(why)
        if self.current is not None:
            self.current.pause(why)

    def resume(self) -> None:
        self.pause_reasons.clear()
        if self.current is not None:
            self.current.resume()
