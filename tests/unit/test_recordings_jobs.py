"""The transcription job queue: leases, exactly-once completion, retry with backoff, visible failures."""

from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from callcentre.db.base import utcnow
from callcentre.db.models import Recording, SupervisorAlert, Transcript, TranscriptionJob
from callcentre.settings import Settings
from recordings import jobs
from recordings.transcription import TranscriptResult, Word
from tests.recordings_data import make_call

RESULT = TranscriptResult(
    (Word("caller", "요금", 0.1, 0.4, 0.9), Word("caller", "일", 0.5, 0.6, 0.8),
     Word("caller", "이", 0.6, 0.7, 0.8), Word("caller", "삼", 0.7, 0.8, 0.8),
     Word("caller", "사", 0.8, 0.9, 0.8), Word("agent", "네", 1.0, 1.2, 0.7)),
    2.0,
)


def _recording(session_factory: sessionmaker[Session], path: str = "/nonexistent.wav") -> tuple[int, str]:
    with session_factory() as session:
        rows = make_call(session)
        rec = Recording(call_id=rows.call.id, kind="conversation", path=path)
        session.add(rec)
        session.flush()
        jobs.enqueue(session, rec, max_attempts=3)
        jobs.enqueue(session, rec)  # queuing twice keeps one job
        session.commit()
        return rec.id, rows.call.id


def test_backoff_doubles_and_caps() -> None:
    assert [jobs.backoff_seconds(n, 5, 60) for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 40, 60]


def test_claim_complete_exactly_once(session_factory: sessionmaker[Session]) -> None:
    rec_id, call_id = _recording(session_factory)
    first = jobs.claim(session_factory, lease_seconds=30)
    assert first is not None and first.recording_id == rec_id and first.attempt == 1
    assert jobs.claim(session_factory, lease_seconds=30) is None  # leased: nobody else gets it
    # The lease expires (worker presumed dead); another worker claims it with a new token.
    later = utcnow() + timedelta(seconds=31)
    second = jobs.claim(session_factory, lease_seconds=30, now=later)
    assert second is not None and second.token != first.token and second.attempt == 2
    # The first worker comes back to life and finishes: nothing is written.
    assert jobs.complete(session_factory, first, RESULT) is None
    assert jobs.renew(session_factory, first, 30) is False
    transcript_id = jobs.complete(session_factory, second, RESULT)
    assert transcript_id is not None
    assert jobs.complete(session_factory, second, RESULT) is None  # idempotent
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Transcript)) == 1
        transcript = session.get(Transcript, transcript_id)
        assert transcript is not None and transcript.call_id == call_id
        assert "일" not in transcript.text.split()  # the PIN-like run was redacted before storing
        assert transcript.words[1]["word"] == "[redacted]" and transcript.words[0]["word"] == "요금"
        job = session.scalar(select(TranscriptionJob))
        assert job is not None and job.state == "done" and job.transcript_id == transcript_id


def test_failures_back_off_then_give_up_with_alert(session_factory: sessionmaker[Session],
                                                   settings: Settings) -> None:
    from recordings.transcription import TranscriptionError

    rec_id, call_id = _recording(session_factory)
    now = utcnow()
    for attempt in (1, 2, 3):
        lease = jobs.claim(session_factory, lease_seconds=30, now=now)
        assert lease is not None and lease.attempt == attempt
        state = jobs.fail(session_factory, lease, TranscriptionError("not a PCM WAV file"), base_backoff=10)
        assert state == ("failed" if attempt == 3 else "queued")
        with session_factory() as session:
            job = session.scalar(select(TranscriptionJob))
            assert job is not None
            if state == "queued":
                wait = (job.next_attempt_at - utcnow()).total_seconds()
                assert 10 * 2 ** (attempt - 1) - 2 < wait <= 10 * 2 ** (attempt - 1)
                assert jobs.claim(session_factory, lease_seconds=30) is None  # not before its time
        now = utcnow() + timedelta(seconds=100)
    with session_factory() as session:
        failed = jobs.failed_jobs(session)
        assert [(j.recording_id, j.attempts) for j in failed] == [(rec_id, 3)]
        assert "TranscriptionError" in failed[0].last_error
        alert = session.scalar(select(SupervisorAlert))
        assert alert is not None and alert.kind == "transcription_failed" and alert.call_id == call_id

    # Supervisors see it from the command line too, and can queue it again.
    from recordings.cli import transcribe_jobs_command

    runner = CliRunner()
    out = runner.invoke(transcribe_jobs_command, ["--state", "failed"], obj=settings)
    assert out.exit_code == 0, out.output
    assert "failed" in out.output and call_id in out.output
    out = runner.invoke(transcribe_jobs_command, ["--retry"], obj=settings)
    assert "re-queued 1" in out.output
    with session_factory() as session:
        assert jobs.job_counts(session) == {"queued": 1}


@pytest.mark.parametrize("bad", ["ninety days", "-5d", "5y"])
def test_purge_refuses_bad_age(bad: str, settings: Settings) -> None:
    from recordings.cli import recordings_group

    out = CliRunner().invoke(recordings_group, ["purge", "--older-than", bad], obj=settings)
    assert out.exit_code == 2 and "cannot read age" in out.output
