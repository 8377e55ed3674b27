"""Transcription jobs: stored in the database so they survive restarts; leased by workers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from callcentre.db.base import Base, created_at, intpk, str32, str64, utcnow


class TranscriptionJob(Base):
    """One recording to transcribe. ``recording_id`` is unique: a recording is never queued twice."""

    __tablename__ = "transcription_jobs"

    id: Mapped[intpk]
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id", ondelete="CASCADE"), unique=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    state: Mapped[str32] = mapped_column(default="queued", index=True)
    """``queued``, ``running``, ``done`` or ``failed`` (gave up after ``max_attempts``)."""
    attempts: Mapped[int] = mapped_column(default=0)
    """Claims so far, including claims by workers that died mid-job."""
    max_attempts: Mapped[int] = mapped_column(default=5)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    """Not claimed before this time: retries back off exponentially."""
    lease_owner: Mapped[str64] = mapped_column(default="")
    """``host:pid:thread`` of the worker holding the job (ids only)."""
    lease_token: Mapped[str] = mapped_column(String(32), default="")
    """Random per claim; only the holder of the current token may finish the job."""
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    """A ``running`` job whose lease expired (worker died) is claimed again."""
    last_error: Mapped[str] = mapped_column(Text, default="")
    """Exception type and message of the last failed attempt (no customer data)."""
    transcript_id: Mapped[int | None] = mapped_column(
        ForeignKey("transcripts.id", ondelete="SET NULL"), default=None
    )
    audio_seconds: Mapped[float] = mapped_column(default=0.0)
    processing_seconds: Mapped[float] = mapped_column(default=0.0)
    created_at: Mapped[created_at]
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
