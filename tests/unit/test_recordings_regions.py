"""Silence skipping: the stretches handed to the recogniser cover every sound, padded, in file samples."""

from __future__ import annotations

from recordings.transcription import speech_regions
from tests.recordings_data import tone_pcm

RATE = 8000


def test_regions_cover_sound_with_padding_and_merge_short_gaps() -> None:
    silence = bytes(RATE * 2)  # 1 s
    pcm = silence + tone_pcm(1.0) + bytes(int(0.4 * RATE) * 2) + tone_pcm(0.5) + silence * 3 + tone_pcm(0.2)
    regions = speech_regions(pcm, RATE)
    assert len(regions) == 2  # the 0.4 s gap is joined, the 3 s gap is not
    (a_start, a_end), (b_start, b_end) = regions
    assert a_start == int(0.7 * RATE) and abs(a_end - int(3.2 * RATE)) <= RATE // 50
    assert b_start == int(5.6 * RATE)
    assert b_end == len(pcm) // 2  # padding stops at the end of the file


def test_silence_only_and_empty() -> None:
    assert speech_regions(bytes(RATE * 4), RATE) == []
    assert speech_regions(b"", RATE) == []
    assert speech_regions(tone_pcm(0.1), RATE) == [(0, int(0.1 * RATE))]
