"""Telephone audio helpers: WAV files ↔ 20 ms G.711 frames, and pyVoIP's 8-bit linear format.

Everything on the wire here is G.711 at 8 kHz: 160 samples per 20 ms frame, one byte per sample
(μ-law payload type 0, A-law payload type 8). Internally audio is 16-bit signed linear PCM.
pyVoIP's own audio API speaks *unsigned 8-bit* linear (bias 128), 160 bytes per 20 ms; the
``*_pyvoip8`` helpers convert for code that talks to pyVoIP's ``VoIPCall.read_audio/write_audio``.

``audioop`` is in the standard library up to Python 3.12; 3.13+ gets it from ``audioop-lts``
(listed in setup.py), which keeps the same API.
"""

from __future__ import annotations

import audioop
import math
import wave
from dataclasses import dataclass
from pathlib import Path

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160
"""20 ms at 8 kHz."""
FRAME_MS = 20

PCMU = 0
PCMA = 8
CODEC_NAMES = {PCMU: "PCMU", PCMA: "PCMA"}

ULAW_SILENCE = b"\xff" * FRAME_SAMPLES
ALAW_SILENCE = b"\xd5" * FRAME_SAMPLES


class AudioFormatError(ValueError):
    """A WAV file that cannot be turned into telephone audio; the message names the file."""


def read_wav_linear16(path: str | Path) -> bytes:
    """Read any PCM WAV and return 8 kHz mono 16-bit signed little-endian samples."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            data = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise AudioFormatError(f"{path}: not a PCM WAV file ({exc})") from exc
    if width not in (1, 2, 3, 4):
        raise AudioFormatError(f"{path}: unsupported sample width {width}")
    if width == 1:
        # WAV stores 8-bit samples unsigned; audioop expects signed.
        data = audioop.bias(data, 1, -128)
    if width != 2:
        data = audioop.lin2lin(data, width, 2)
    if channels == 2:
        data = audioop.tomono(data, 2, 0.5, 0.5)
    elif channels != 1:
        raise AudioFormatError(f"{path}: {channels} channels; only mono or stereo can be used")
    if rate != SAMPLE_RATE:
        data, _ = audioop.ratecv(data, 2, 1, rate, SAMPLE_RATE, None)
    return data


def write_wav_linear16(path: str | Path, pcm16: bytes, rate: int = SAMPLE_RATE) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm16)


def split_frames(pcm16: bytes, samples: int = FRAME_SAMPLES) -> list[bytes]:
    """Cut linear audio into whole frames, padding the last one with silence."""
    size = samples * 2
    if len(pcm16) % size:
        pcm16 += b"\x00" * (size - len(pcm16) % size)
    return [pcm16[i : i + size] for i in range(0, len(pcm16), size)]


def encode(pcm16: bytes, payload_type: int) -> bytes:
    """16-bit linear → G.711 payload (μ-law for 0, A-law for 8)."""
    if payload_type == PCMU:
        return audioop.lin2ulaw(pcm16, 2)
    if payload_type == PCMA:
        return audioop.lin2alaw(pcm16, 2)
    raise ValueError(f"payload type {payload_type} is not G.711; choose 0 (PCMU) or 8 (PCMA)")


def decode(payload: bytes, payload_type: int) -> bytes:
    """G.711 payload → 16-bit linear."""
    if payload_type == PCMU:
        return audioop.ulaw2lin(payload, 2)
    if payload_type == PCMA:
        return audioop.alaw2lin(payload, 2)
    raise ValueError(f"payload type {payload_type} is not G.711; choose 0 (PCMU) or 8 (PCMA)")


def transcode(payload: bytes, from_pt: int, to_pt: int) -> bytes:
    if from_pt == to_pt:
        return payload
    return encode(decode(payload, from_pt), to_pt)


def silence(payload_type: int) -> bytes:
    return ULAW_SILENCE if payload_type == PCMU else ALAW_SILENCE


def linear16_to_pyvoip8(pcm16: bytes) -> bytes:
    """16-bit signed → pyVoIP's unsigned 8-bit linear (what ``VoIPCall.write_audio`` takes)."""
    return audioop.bias(audioop.lin2lin(pcm16, 2, 1), 1, 128)


def pyvoip8_to_linear16(data: bytes) -> bytes:
    """pyVoIP's unsigned 8-bit linear (``VoIPCall.read_audio``) → 16-bit signed."""
    return audioop.lin2lin(audioop.bias(data, 1, -128), 1, 2)


def rms_dbfs(pcm16: bytes) -> float:
    """Loudness of 16-bit audio in dB relative to full scale; -inf for digital silence."""
    if not pcm16:
        return -math.inf
    level = audioop.rms(pcm16, 2)
    return 20 * math.log10(level / 32768) if level else -math.inf


def g711_rms_dbfs(payload: bytes, payload_type: int) -> float:
    return rms_dbfs(decode(payload, payload_type))


@dataclass(frozen=True)
class EncodedClip:
    """A prompt or music file pre-encoded as 20 ms frames for one codec."""

    name: str
    payload_type: int
    frames: tuple[bytes, ...]

    @property
    def seconds(self) -> float:
        return len(self.frames) * FRAME_MS / 1000


class ClipCache:
    """Encodes each WAV once per codec; prompts are shared by every call (bounded by the files)."""

    def __init__(self) -> None:
        self._clips: dict[tuple[str, int], EncodedClip] = {}

    def get(self, path: str | Path, payload_type: int) -> EncodedClip:
        key = (str(path), payload_type)
        clip = self._clips.get(key)
        if clip is None:
            pcm = read_wav_linear16(path)
            frames = tuple(encode(f, payload_type) for f in split_frames(pcm))
            clip = EncodedClip(Path(path).stem, payload_type, frames)
            self._clips[key] = clip
        return clip


def tone_linear16(freqs: tuple[float, ...], seconds: float, level: float = 0.25) -> bytes:
    """A mix of sine tones (used as built-in hold music when no file is configured, and in tests)."""
    n = int(seconds * SAMPLE_RATE)
    amp = 32767 * level / max(1, len(freqs))
    out = bytearray()
    for i in range(n):
        value = sum(math.sin(2 * math.pi * f * i / SAMPLE_RATE) for f in freqs)
        out += int(amp * value).to_bytes(2, "little", signed=True)
    return bytes(out)
