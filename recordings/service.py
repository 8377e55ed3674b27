"""Recording wired to the call lifecycle: which part is recorded when, pauses, and queuing transcription.

- ``CallArrived`` → the IVR part starts (mono, caller audio).
- ``AgentAnswered`` → the IVR part closes, the conversation starts (stereo: caller left, agent right).
- ``CallHungUp`` → everything closes; a ``Recording`` row per file, and a transcription job per file.
- ``CallbackUnanswered`` → the recording a callback's ``AgentAnswered`` started is closed and deleted:
  the customer never came on, so it holds only the agent and the ringback tone, no conversation to keep
  or transcribe (and no ``CallHungUp`` follows to close it).
- A ``Gather`` marked ``sensitive`` (PIN, card number) pauses the recording until the next action,
  via :class:`RecordingBackend`, which wraps any telephony backend; an agent's pause button calls
  :meth:`RecordingService.pause` / :meth:`resume`.

Backends that carry audio hand it over with :meth:`RecordingService.feed` (16-bit PCM, 8 kHz).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from callcentre.bus import EventBus
from callcentre.db.session import session_scope
from callcentre.domain.events import AgentAnswered, CallArrived, CallbackUnanswered, CallHungUp
from ivr.actions import Action, Gather
from recordings import jobs
from recordings.storage import CallRecorder, save_recording
from telephony.base import TelephonyBackend
from telephony.wrapper import BackendWrapper

log = logging.getLogger(__name__)

SENSITIVE_INPUT = "sensitive_input"
AGENT_BUTTON = "agent"


class RecordingService:
    def __init__(self, directory: str | Path, factory: sessionmaker[Session], *,
                 transcribe: bool = True, max_attempts: int = 5,
                 drain: Callable[[], None] | None = None) -> None:
        self.directory = Path(directory)
        self.drain = drain
        """Waits for audio still queued between the media thread and :meth:`feed` (``AudioTap.drain``)."""
        self.factory = factory
        self.transcribe = transcribe
        self.max_attempts = max_attempts
        self._calls: dict[str, CallRecorder] = {}
        self._lock = threading.Lock()

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(CallArrived, self.on_arrived)
        bus.subscribe(AgentAnswered, self.on_agent_answered)
        bus.subscribe(CallHungUp, self.on_hung_up)
        bus.subscribe(CallbackUnanswered, self.on_callback_unanswered)

    def recorder(self, call_id: str) -> CallRecorder | None:
        with self._lock:
            return self._calls.get(call_id)

    def on_arrived(self, event: CallArrived) -> None:
        with self._lock:
            recorder = self._calls.setdefault(event.call_id, CallRecorder(event.call_id, self.directory))
        recorder.start("ivr")

    def on_agent_answered(self, event: AgentAnswered) -> None:
        with self._lock:
            recorder = self._calls.setdefault(event.call_id, CallRecorder(event.call_id, self.directory))
        recorder.start("conversation")

    def on_hung_up(self, event: CallHungUp) -> None:
        self.finish(event.call_id)

    def on_callback_unanswered(self, event: CallbackUnanswered) -> None:
        self.discard(event.call_id)

    def discard(self, call_id: str) -> int:
        """Close the call's open recordings and delete their files without saving rows; returns how many."""
        if self.drain is not None and self.recorder(call_id) is not None:
            self.drain()
        with self._lock:
            recorder = self._calls.pop(call_id, None)
        if recorder is None:
            return 0
        recorder.stop()
        for finished in recorder.finished:
            finished.path.unlink(missing_ok=True)
        log.info("call %s: %d unanswered-callback recording(s) discarded", call_id, len(recorder.finished))
        return len(recorder.finished)

    def start_part(self, call_id: str, kind: str) -> None:
        """Start recording ``kind`` (e.g. ``survey_comment``) for a call, closing any open part."""
        with self._lock:
            recorder = self._calls.setdefault(call_id, CallRecorder(call_id, self.directory))
        recorder.start(kind)

    def finish(self, call_id: str) -> list[int]:
        """Close the call's recordings, save their rows, queue their transcription; returns the row ids."""
        if self.drain is not None and self.recorder(call_id) is not None:
            self.drain()
        with self._lock:
            recorder = self._calls.pop(call_id, None)
        if recorder is None:
            return []
        recorder.stop()
        ids: list[int] = []
        if not recorder.finished:
            return ids
        with session_scope(self.factory) as session:
            for finished in recorder.finished:
                row = save_recording(session, call_id, finished)
                ids.append(row.id)
                if self.transcribe and finished.duration_seconds > 0:
                    jobs.enqueue(session, row, max_attempts=self.max_attempts)
        log.info("call %s: %d recording(s) saved", call_id, len(ids))
        return ids

    def feed(self, call_id: str, leg: str, pcm16: bytes) -> None:
        recorder = self.recorder(call_id)
        if recorder is not None:
            recorder.feed(leg, pcm16)

    def pause(self, call_id: str, why: str = AGENT_BUTTON) -> bool:
        recorder = self.recorder(call_id)
        if recorder is None:
            return False
        recorder.pause(why)
        return True

    def resume(self, call_id: str, why: str | None = None) -> bool:
        """Resume; with ``why``, only a pause made for that reason (an agent's pause outlives IVR steps)."""
        recorder = self.recorder(call_id)
        if recorder is None or (why is not None and why not in recorder.pause_reasons):
            return False
        recorder.resume()
        return True


class RecordingBackend(BackendWrapper):
    """Wraps a telephony backend: pauses recording for sensitive gathers, resumes on the next action.

    The pause starts before the prompt asking for the PIN is played and lasts until the IVR acts on
    the answer (its next action), so the keypad tones and any spoken digits are never stored.
    """

    def __init__(self, inner: TelephonyBackend, recordings: RecordingService) -> None:
        super().__init__(inner)
        self.recordings = recordings

    def perform(self, call_id: str, action: Action) -> None:
        if isinstance(action, Gather) and action.sensitive:
            self.recordings.pause(call_id, SENSITIVE_INPUT)
        else:
            self.recordings.resume(call_id, SENSITIVE_INPUT)
        self.inner.perform(call_id, action)
