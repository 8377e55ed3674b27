"""Transcription jobs in the database: enqueue, lease, finish exactly once, retry with backoff.

Why a lease and a token: a worker may die at any moment (``kill -9``, power). A job it held stays
``running`` until its lease expires, then any worker may claim it again; every claim gets a new random
token, and :func:`complete` writes the transcript and marks the job done in ONE transaction that only
succeeds while the caller still holds the current token and no transcript exists for the recording.
So a job is never lost (it is claimed again) and never done twice (the second finisher's transaction
finds the token changed and writes nothing).

Functions receive a session factory or session; callers own the lifecycle.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from callcentre.db.base import utcnow
from callcentre.db.models import (
    Call,
    Recording,
    SupervisorAlert,
    SurveyResponse,
    Transcript,
    TranscriptionJob,
)
from recordings.redaction import redact_words
from recordings.transcription import TranscriptResult

BACKOFF_BASE_SECONDS = 5.0
BACKOFF_MAX_SECONDS = 600.0


def backoff_seconds(attempt: int, base: float = BACKOFF_BASE_SECONDS,
                    cap: float = BACKOFF_MAX_SECONDS) -> float:
    """Wait before retry number ``attempt`` (1-based): base, 2·base, 4·base … capped."""
    return float(min(cap, base * (2 ** max(0, attempt - 1))))


def worker_identity() -> str:
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{threading.get_ident() % 100000}"


@dataclass(frozen=True)
class Lease:
    job_id: int
    recording_id: int
    call_id: str
    token: str
    attempt: int
    path: str


def enqueue(session: Session, recording: Recording, *, max_attempts: int = 5) -> TranscriptionJob:
    """Queue ``recording`` for transcription; queuing the same recording again returns the existing job."""
    existing = session.scalar(select(TranscriptionJob).where(TranscriptionJob.recording_id == recording.id))
    if existing is not None:
        return existing
    job = TranscriptionJob(recording_id=recording.id, call_id=recording.call_id, max_attempts=max_attempts)
    try:
        with session.begin_nested():
            session.add(job)
    except IntegrityError:
        # Another process queued it between our check and insert: theirs is the job.
        found = session.scalar(select(TranscriptionJob).where(TranscriptionJob.recording_id == recording.id))
        assert found is not None
        return found
    return job


def _claimable(now: datetime) -> Any:
    return or_(
        (TranscriptionJob.state == "queued") & (TranscriptionJob.next_attempt_at <= now),
        (TranscriptionJob.state == "running") & (TranscriptionJob.lease_expires_at < now),
    )


def claim(factory: sessionmaker[Session], *, lease_seconds: float, owner: str | None = None,
          now: datetime | None = None) -> Lease | None:
    """Lease the oldest claimable job, or None. Safe with many workers in many processes.

    The UPDATE repeats the claimable condition, so when two workers race for the same row only one
    update matches (rowcount 1); the loser simply tries the next candidate.
    """
    owner = owner or worker_identity()
    for _ in range(20):
        when = now or utcnow()
        with factory() as session, session.begin():
            candidate = session.scalar(
                select(TranscriptionJob.id).where(_claimable(when)).order_by(TranscriptionJob.id).limit(1)
            )
            if candidate is None:
                return None
            token = secrets.token_hex(16)
            result = session.execute(
                update(TranscriptionJob)
                .where(TranscriptionJob.id == candidate, _claimable(when))
                .values(state="running", lease_owner=owner[:64], lease_token=token,
                        lease_expires_at=when + timedelta(seconds=lease_seconds),
                        attempts=TranscriptionJob.attempts + 1, started_at=when)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                continue
            job = session.get(TranscriptionJob, candidate)
            assert job is not None
            recording = session.get(Recording, job.recording_id)
            path = recording.path if recording is not None else ""
            return Lease(job.id, job.recording_id, job.call_id, token, job.attempts, path)
    return None


def renew(factory: sessionmaker[Session], lease: Lease, lease_seconds: float) -> bool:
    """Extend the lease; False means it was lost (expired and claimed by someone else)."""
    with factory() as session, session.begin():
        result = session.execute(
            update(TranscriptionJob)
            .where(TranscriptionJob.id == lease.job_id, TranscriptionJob.lease_token == lease.token,
                   TranscriptionJob.state == "running")
            .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def complete(factory: sessionmaker[Session], lease: Lease, result: TranscriptResult,
             processing_seconds: float = 0.0) -> int | None:
    """Attach the (redacted) transcript to the call and mark the job done, atomically.

    Returns the transcript id, or None when this worker no longer holds the job or the recording
    already has a transcript (nothing is written then).
    """
    words, text = redact_words([w.as_dict() for w in result.words])
    with factory() as session, session.begin():
        already = session.scalar(
            select(func.count()).select_from(Transcript).where(Transcript.recording_id == lease.recording_id)
        )
        if already:
            return None
        transcript = Transcript(call_id=lease.call_id, recording_id=lease.recording_id,
                                language=result.language, text=text, words=words)
        session.add(transcript)
        session.flush()
        updated = session.execute(
            update(TranscriptionJob)
            .where(TranscriptionJob.id == lease.job_id, TranscriptionJob.lease_token == lease.token,
                   TranscriptionJob.state == "running")
            .values(state="done", transcript_id=transcript.id, finished_at=utcnow(), last_error="",
                    lease_expires_at=None, audio_seconds=result.duration_seconds,
                    processing_seconds=processing_seconds)
            .execution_options(synchronize_session=False)
        )
        if updated.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()
            return None
        # A survey comment's words go onto the survey response too (same redacted text).
        session.execute(
            update(SurveyResponse).where(SurveyResponse.comment_recording_id == lease.recording_id)
            .values(comment_text=" ".join(w["word"] for w in words)).execution_options(synchronize_session=False)
        )
        return transcript.id


def fail(factory: sessionmaker[Session], lease: Lease, error: BaseException, *,
         base_backoff: float = BACKOFF_BASE_SECONDS) -> str:
    """Record a failed attempt: back to ``queued`` with backoff, or ``failed`` after max attempts.

    A permanent failure also raises a supervisor alert. Returns the job's new state.
    """
    message = f"{type(error).__name__}: {error}"[:2000]
    now = utcnow()
    with factory() as session, session.begin():
        job = session.get(TranscriptionJob, lease.job_id)
        if job is None or job.lease_token != lease.token or job.state != "running":
            return job.state if job is not None else "gone"
        job.last_error = message
        job.lease_expires_at = None
        if job.attempts >= job.max_attempts:
            job.state = "failed"
            job.finished_at = now
            session.add(SupervisorAlert(kind="transcription_failed", call_id=job.call_id,
                                        detail={"job_id": job.id, "recording_id": job.recording_id,
                                                "attempts": job.attempts}))
        else:
            job.state = "queued"
            job.next_attempt_at = now + timedelta(seconds=backoff_seconds(job.attempts, base_backoff))
        return job.state


def retry_failed(session: Session, job_ids: list[int] | None = None) -> int:
    """Put failed jobs back in the queue (a supervisor fixed the cause); returns how many."""
    stmt = update(TranscriptionJob).where(TranscriptionJob.state == "failed")
    if job_ids:
        stmt = stmt.where(TranscriptionJob.id.in_(job_ids))
    result = session.execute(
        stmt.values(state="queued", attempts=0, next_attempt_at=utcnow(), finished_at=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class JobView:
    """One job as supervisors see it (ids, state, error; no customer data)."""

    id: int
    call_id: str
    recording_id: int
    state: str
    attempts: int
    max_attempts: int
    last_error: str
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None


def list_jobs(session: Session, *, state: str | None = None, limit: int = 100) -> list[JobView]:
    """Jobs newest first, optionally of one state; ``failed`` is what the supervisor console shows."""
    stmt = select(TranscriptionJob).order_by(TranscriptionJob.id.desc()).limit(limit)
    if state:
        stmt = stmt.where(TranscriptionJob.state == state)
    return [
        JobView(j.id, j.call_id, j.recording_id, j.state, j.attempts, j.max_attempts, j.last_error,
                j.next_attempt_at, j.created_at, j.finished_at)
        for j in session.scalars(stmt)
    ]


def failed_jobs(session: Session, limit: int = 100) -> list[JobView]:
    """Transcriptions that gave up: the supervisor console and ``transcribe-jobs --state failed``."""
    return list_jobs(session, state="failed", limit=limit)


def job_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(TranscriptionJob.state, func.count()).group_by(TranscriptionJob.state))
    return {state: int(n) for state, n in rows}


def transcripts_for_customer(session: Session, customer_id: int) -> list[Transcript]:
    """The customer's transcripts, newest call first (the customer history shows these)."""
    stmt = (
        select(Transcript)
        .join(Call, Call.id == Transcript.call_id)
        .where(Call.customer_id == customer_id)
        .order_by(Call.arrived_at.desc(), Transcript.id)
    )
    return list(session.scalars(stmt))
