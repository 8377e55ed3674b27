"""The audio tap hands frames on in order, never blocks its caller, and drains before a recording closes."""

from __future__ import annotations

import threading

from recordings.tap import AudioTap
from recordings.wiring import audio_backend


def test_frames_arrive_in_order_and_drain_waits() -> None:
    got: list[tuple[str, str, bytes]] = []
    tap = AudioTap([lambda c, leg, pcm: got.append((c, leg, pcm))])
    try:
        for n in range(500):
            tap("call-1", "caller" if n % 2 else "agent", bytes([n % 256]))
        tap.drain()
        assert len(got) == 500
        assert [pcm[0] for _, _, pcm in got] == [n % 256 for n in range(500)]
    finally:
        tap.stop()


def test_full_queue_drops_instead_of_blocking() -> None:
    release = threading.Event()
    tap = AudioTap([lambda *_: release.wait(5)], max_frames=10)
    try:
        for _ in range(100):
            tap("call-1", "caller", b"\x00\x00")  # must return at once even though the sink is stuck
        assert tap.dropped >= 80
    finally:
        release.set()
        tap.stop()


def test_a_failing_sink_does_not_stop_the_others() -> None:
    got: list[bytes] = []

    def broken(*_: object) -> None:
        raise RuntimeError("disk full")

    tap = AudioTap([broken, lambda c, leg, pcm: got.append(pcm)])
    try:
        tap("call-1", "caller", b"ab")
        tap.drain()
        assert got == [b"ab"]
    finally:
        tap.stop()


def test_audio_backend_found_through_wrappers() -> None:
    from telephony.memory import MemoryBackend

    class Media:
        audio_sink = None

    class Wrapper:
        def __init__(self, inner: object) -> None:
            self.inner = inner

    media = Media()
    assert audio_backend(Wrapper(Wrapper(media))) is media
    assert audio_backend(MemoryBackend()) is None
