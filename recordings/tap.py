"""Hands received audio from a backend's media thread to the recorder and the speech gate.

The media thread sends every call's RTP on a 20 ms clock, so it must never wait on a file write or
a Vosk decode: the tap only queues the frame; one worker thread does the rest. If the worker falls
behind by more than ``max_frames`` frames, new frames are dropped and counted rather than letting
memory grow or the media thread block.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

FrameSink = Callable[[str, str, bytes], None]


class AudioTap:
    def __init__(self, sinks: list[FrameSink], *, max_frames: int = 50_000) -> None:
        self.sinks = list(sinks)
        self.dropped = 0
        self._queue: queue.Queue[tuple[str, str, bytes] | threading.Event | None] = queue.Queue(maxsize=max_frames)
        self._thread = threading.Thread(target=self._run, name="audio-tap", daemon=True)
        self._thread.start()

    def __call__(self, call_id: str, leg: str, pcm16: bytes) -> None:
        try:
            self._queue.put_nowait((call_id, leg, pcm16))
        except queue.Full:
            self.dropped += 1

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until every queued frame has been handed on (before closing a recording)."""
        if threading.current_thread() is self._thread:
            return
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return
        done.wait(timeout)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            call_id, leg, pcm = item
            for sink in self.sinks:
                try:
                    sink(call_id, leg, pcm)
                except Exception:
                    log.exception("audio sink failed for call %s", call_id)
