"""Stereo recording files: channels, pauses marked and silenced, paths, checksums, wiring."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from callcentre.bus import EventBus
from callcentre.db.models import Recording, TranscriptionJob
from callcentre.domain.events import AgentAnswered, CallArrived, CallHungUp
from ivr.actions import Gather, Hangup, Prompt
from recordings.storage import (
    RecordingError,
    RecordingWriter,
    audioop,
    recording_path,
    sha256_of,
    u8_to_pcm16,
    verify,
)
from tests.recordings_data import make_call, tone_pcm

FRAME = 320  # 20 ms of 16-bit 8 kHz audio


def _read(path: Path) -> tuple[int, bytes]:
    with wave.open(str(path), "rb") as wav:
        return wav.getnchannels(), wav.readframes(wav.getnframes())


def test_caller_left_agent_right(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path / "a.wav", channels=2, kind="conversation")
    caller, agent = tone_pcm(1.0, 440), tone_pcm(1.0, 1000, amplitude=3000)
    for i in range(0, len(caller), FRAME):
        writer.feed("caller", caller[i:i + FRAME])
        writer.feed("agent", agent[i:i + FRAME])
    done = writer.close()
    channels, frames = _read(done.path)
    assert channels == 2
    assert done.duration_seconds == pytest.approx(1.0)
    left, right = audioop.tomono(frames, 2, 1, 0), audioop.tomono(frames, 2, 0, 1)
    assert left == caller and right == agent
    assert done.sha256 == sha256_of(done.path)


def test_silent_leg_is_padded_not_buffered_forever(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path / "b.wav", channels=2, kind="conversation")
    for chunk in range(150):  # 3 s of caller audio, the agent leg sends nothing
        writer.feed("caller", tone_pcm(0.02))
        assert len(writer._legs["caller"]) <= 8000 * 2 * 1.1 + FRAME, chunk
    done = writer.close()
    _, frames = _read(done.path)
    assert done.duration_seconds == pytest.approx(3.0)
    assert audioop.rms(audioop.tomono(frames, 2, 0, 1), 2) == 0
    assert audioop.rms(audioop.tomono(frames, 2, 1, 0), 2) > 1000


def test_pause_writes_silence_and_marks_the_gap(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path / "c.wav", channels=1, kind="ivr")
    writer.feed("caller", tone_pcm(1.0))
    writer.pause("sensitive_input")
    writer.feed("caller", tone_pcm(0.5, 700))  # the PIN: must not be stored
    writer.resume()
    writer.feed("caller", tone_pcm(1.0))
    done = writer.close()
    assert done.pauses == [{"from": 1.0, "to": 1.5, "why": "sensitive_input"}]
    _, frames = _read(done.path)
    assert audioop.rms(frames[16000:24000], 2) == 0
    assert audioop.rms(frames[:16000], 2) > 1000 and audioop.rms(frames[24000:], 2) > 1000


def test_mono_keeps_only_the_caller_and_pause_open_at_close_is_closed(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path / "d.wav", channels=1, kind="ivr")
    writer.feed("agent", tone_pcm(1.0))
    writer.feed("caller", tone_pcm(0.5))
    writer.pause("agent")
    writer.feed("caller", tone_pcm(0.5))
    done = writer.close()
    assert done.duration_seconds == pytest.approx(1.0)
    assert done.pauses == [{"from": 0.5, "to": 1.0, "why": "agent"}]


def test_paths_by_date_and_call_id_refuse_traversal(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    path = recording_path(tmp_path, "call-abc", "conversation", datetime(2026, 3, 4, tzinfo=UTC))
    assert path == tmp_path / "2026" / "03" / "04" / "call-abc-conversation.wav"
    for bad in ("../etc", "a/b", "", ".hidden"):
        with pytest.raises(RecordingError):
            recording_path(tmp_path, bad, "ivr")
    with pytest.raises(RecordingError):
        recording_path(tmp_path, "call-1", "video")


def test_u8_frames_convert() -> None:
    assert u8_to_pcm16(bytes([128, 255, 0])) == b"\x00\x00\x00\x7f\x00\x80"


def test_service_records_ivr_and_conversation_and_queues_jobs(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    from recordings.service import RecordingBackend, RecordingService

    with session_factory() as session:
        rows = make_call(session)
        call_id = rows.call.id
        agent_id = rows.agent.id
        session.commit()

    class _Backend:
        name = "fake-for-wiring"

        def __init__(self) -> None:
            self.performed: list[object] = []

        def perform(self, call_id: str, action: object) -> None:
            self.performed.append(action)

    service = RecordingService(tmp_path, session_factory)
    bus = EventBus()
    service.subscribe(bus)
    inner = _Backend()
    backend = RecordingBackend(inner, service)  # type: ignore[arg-type]
    bus.publish(CallArrived(call_id, caller_id="+8210", dialled="1000", backend="memory"))
    service.feed(call_id, "caller", tone_pcm(0.5))
    backend.perform(call_id, Gather(prompts=(Prompt("pin", "PIN?"),), max_digits=4, sensitive=True))
    service.feed(call_id, "caller", tone_pcm(0.5))  # keypad tones while paused
    backend.perform(call_id, Gather(max_digits=1))
    service.feed(call_id, "caller", tone_pcm(0.5))
    bus.publish(AgentAnswered(call_id, agent_id=agent_id))
    service.pause(call_id)  # agent button
    backend.perform(call_id, Hangup())  # an IVR action does not end an agent's pause
    service.feed(call_id, "caller", tone_pcm(0.5))
    service.feed(call_id, "agent", tone_pcm(0.5))
    assert service.resume(call_id)
    service.feed(call_id, "caller", tone_pcm(1.0))
    service.feed(call_id, "agent", tone_pcm(1.0))
    bus.publish(CallHungUp(call_id, by="agent"))
    assert bus.errors == 0
    assert len(inner.performed) == 3

    with session_factory() as session:
        recs = {r.kind: r for r in session.scalars(select(Recording).where(Recording.call_id == call_id))}
        assert set(recs) == {"ivr", "conversation"}
        assert recs["ivr"].pauses == [{"from": 0.5, "to": 1.0, "why": "sensitive_input"}]
        assert recs["ivr"].duration_seconds == pytest.approx(1.5)
        assert recs["conversation"].channels == 2
        assert recs["conversation"].pauses == [{"from": 0.0, "to": 0.5, "why": "agent"}]
        assert all(verify(r) for r in recs.values())
        jobs = session.scalars(select(TranscriptionJob).where(TranscriptionJob.call_id == call_id)).all()
        assert sorted(j.recording_id for j in jobs) == sorted(r.id for r in recs.values())
