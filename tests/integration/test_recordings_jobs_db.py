"""The job queue under contention on SQLite and a real PostgreSQL server: every job claimed once at a
time, completed exactly once, even when leases expire and stale workers try to finish."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from callcentre.db.base import utcnow
from callcentre.db.models import Recording, Transcript, TranscriptionJob
from recordings import jobs
from recordings.transcription import TranscriptResult, Word
from tests.recordings_data import make_call

RESULT = TranscriptResult((Word("caller", "요금", 0.0, 0.5, 0.9),), 1.0)


def test_many_claimers_one_owner_each_job(db_sessions: sessionmaker[Session]) -> None:
    with db_sessions() as session:
        for n in range(12):
            rows = make_call(session, suffix=f"{n:04d}")
            rec = Recording(call_id=rows.call.id, path=f"/x/{n}.wav")
            session.add(rec)
            session.flush()
            jobs.enqueue(session, rec)
        session.commit()

    claimed: list[jobs.Lease] = []
    lock = threading.Lock()

    def worker() -> None:
        while True:
            lease = jobs.claim(db_sessions, lease_seconds=60)
            if lease is None:
                return
            with lock:
                claimed.append(lease)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(lease.job_id for lease in claimed) == sorted({lease.job_id for lease in claimed})
    assert len(claimed) == 12

    # Every lease "expires"; a second generation claims them all again; both generations try to finish.
    later = utcnow() + timedelta(seconds=61)
    second = [jobs.claim(db_sessions, lease_seconds=60, now=later) for _ in range(12)]
    assert all(s is not None for s in second)
    results: list[int | None] = []

    def finish(lease: jobs.Lease) -> None:
        results.append(jobs.complete(db_sessions, lease, RESULT))

    finishers = [threading.Thread(target=finish, args=(lease,)) for lease in [*claimed, *second] if lease]
    for t in finishers:
        t.start()
    for t in finishers:
        t.join(60)
    assert sum(r is not None for r in results) == 12
    with db_sessions() as session:
        assert session.scalar(select(func.count()).select_from(Transcript)) == 12
        assert set(session.scalars(select(TranscriptionJob.state))) == {"done"}
        per_recording = session.execute(
            select(Transcript.recording_id, func.count()).group_by(Transcript.recording_id)
        ).all()
        assert all(n == 1 for _, n in per_recording)
