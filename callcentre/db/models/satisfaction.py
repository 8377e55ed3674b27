"""Follow-ups the post-call survey raises: supervisor alerts and callback tasks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from callcentre.db.base import Base, created_at, intpk, str32, str64


class SupervisorAlert(Base):
    """Something a supervisor should look at (shown on the wallboard until acknowledged)."""

    __tablename__ = "supervisor_alerts"

    id: Mapped[intpk]
    kind: Mapped[str32] = mapped_column(index=True)
    """``low_satisfaction``, ``transcription_failed`` …"""
    call_id: Mapped[str | None] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"), default=None)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), default=None)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Ids and numbers only (e.g. ``{"score": 1, "survey_id": 7}``), never customer data."""
    created_at: Mapped[created_at]
    acknowledged_at: Mapped[datetime | None] = mapped_column(default=None)
    acknowledged_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id"), default=None)


class CallbackTask(Base):
    """Call this customer back (e.g. after a low satisfaction score); worked by supervisors or agents."""

    __tablename__ = "callback_tasks"

    id: Mapped[intpk]
    reason: Mapped[str64] = mapped_column(index=True)
    call_id: Mapped[str | None] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"), default=None)
    """Agent of the surveyed call (who the callback is about, not necessarily who makes it)."""
    survey_id: Mapped[int | None] = mapped_column(ForeignKey("survey_responses.id"), default=None)
    state: Mapped[str32] = mapped_column(default="open", index=True)
    """``open``, ``done`` or ``cancelled``."""
    created_at: Mapped[created_at]
    done_at: Mapped[datetime | None] = mapped_column(default=None)
