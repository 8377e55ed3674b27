"""Post-call satisfaction answers."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, ForeignKey, Text
from sqlalchemy.orm import Mapped, mapped_column

from callcentre.db.base import Base, created_at, intpk


class SurveyResponse(Base):
    __tablename__ = "survey_responses"
    __table_args__ = (CheckConstraint("score IS NULL OR score BETWEEN 1 AND 5", name="score_range"),)

    id: Mapped[intpk]
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    score: Mapped[int | None] = mapped_column(default=None)
    solved: Mapped[bool | None] = mapped_column(default=None)
    comment_text: Mapped[str] = mapped_column(Text, default="")
    comment_recording_id: Mapped[int | None] = mapped_column(ForeignKey("recordings.id"), default=None)
    completed: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[created_at]
