"""Recordings of calls and their transcripts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from callcentre.db.base import Base, created_at, intpk, str32
from callcentre.db.models.fts import fts_index


class Recording(Base):
    __tablename__ = "recordings"

    id: Mapped[intpk]
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str32] = mapped_column(default="conversation")
    """``conversation`` (stereo: caller left, agent right), ``ivr`` or ``survey_comment``."""
    path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64), default="")
    channels: Mapped[int] = mapped_column(default=2)
    sample_rate: Mapped[int] = mapped_column(default=8000)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    duration_seconds: Mapped[float] = mapped_column(default=0.0)
    pauses: Mapped[list[Any]] = mapped_column(default=list)
    """``[{"from": seconds, "to": seconds, "why": "pin"}]``: gaps where recording was paused."""
    purged_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[created_at]


class Transcript(Base):
    __tablename__ = "transcripts"
    __table_args__ = (fts_index("ix_transcripts_text_fts", "text"),)

    id: Mapped[intpk]
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    recording_id: Mapped[int | None] = mapped_column(ForeignKey("recordings.id", ondelete="SET NULL"))
    language: Mapped[str] = mapped_column(String(8), default="ko")
    text: Mapped[str] = mapped_column(Text, default="")
    """Redacted text (card-like digit runs and PINs removed)."""
    words: Mapped[list[Any]] = mapped_column(default=list)
    """``[{"speaker": "caller"|"agent", "word": str, "start": s, "end": s, "conf": 0..1}]``."""
    created_at: Mapped[created_at]
