"""Routing state that must survive several router processes: queue places, reservations, transfers.

Atomicity does not come from locks held in Python but from the database itself:

* ``reservations.active_agent_id`` and ``reservations.active_call_id`` are UNIQUE and nullable. A live
  reservation fills both; ending it sets both to NULL. Two live reservations for one agent (or one
  call) therefore cannot exist on any database, whatever the processes do (NULLs never collide).
* State moves are conditional UPDATEs (``... WHERE status = 'waiting'``) whose row count says who won.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from callcentre.db.base import Base, intpk, str32, str64, utcnow


class QueueEntry(Base):
    """A call's place in a queue. The row's ``enqueued_at`` and ``id`` ARE the place: they never change
    when an offer times out or the caller asks for a callback, so the call goes back where it was."""

    __tablename__ = "queue_entries"
    __table_args__ = (Index("ix_queue_entries_queue_status", "queue", "status"),)

    id: Mapped[intpk]
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), unique=True)
    queue: Mapped[str64]
    """Queue name as the IVR flow and ``queues.name`` spell it."""
    status: Mapped[str32] = mapped_column(default="waiting")
    """``waiting``, ``offered`` (an agent is reserved), ``dialling`` (a callback: the agent answered and the
    customer's phone rings), ``connected``, ``abandoned``, ``done``."""
    required_skills: Mapped[list[Any]] = mapped_column(default=list)
    """``[[skill, min_level], ...]`` as the IVR asked for."""
    priority: Mapped[int] = mapped_column(default=0)
    language: Mapped[str] = mapped_column(String(8), default="en")
    reason: Mapped[str64] = mapped_column(default="")
    customer_id: Mapped[int | None] = mapped_column(default=None)
    preferred_agent_id: Mapped[int | None] = mapped_column(default=None)
    enqueued_at: Mapped[datetime] = mapped_column(default=utcnow)
    """When the call took its place; kept through missed offers and callbacks."""
    offers: Mapped[int] = mapped_column(default=0)
    """How many agents have been offered this call so far."""
    callback_number: Mapped[str64 | None] = mapped_column(default=None)
    """Set when the caller chose a callback: they hung up but keep this place. Customer data: never logged."""
    callback_requested_at: Mapped[datetime | None] = mapped_column(default=None)
    callback_attempts: Mapped[int] = mapped_column(default=0)
    """How many times the customer's number was dialled (an agent who did not answer is no attempt)."""
    callback_retry_at: Mapped[datetime | None] = mapped_column(default=None)
    """A callback whose customer did not answer waits (in its place) until this time before it is offered
    again; NULL: routable now."""
    callback_result: Mapped[str32] = mapped_column(default="")
    """The last callback attempt: ``dialling``, ``connected``, ``no-answer``, ``busy``, ``rejected``, ``failed``,
    ``agent-ended`` (the agent ended it while the customer rang; not counted),
    ``not-dialled`` (the backend cannot dial), or ``given-up`` after the last allowed attempt."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Reservation(Base):
    """One offer of one call to one agent, from the router's decision until answer, miss or cancel."""

    __tablename__ = "reservations"

    id: Mapped[intpk]
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    status: Mapped[str32] = mapped_column(default="active")
    """``active``, ``answered``, ``missed``, ``cancelled``."""
    active_agent_id: Mapped[int | None] = mapped_column(unique=True, default=None)
    """Equals ``agent_id`` while active, NULL after: the UNIQUE constraint is the one-call-per-agent rule."""
    active_call_id: Mapped[str | None] = mapped_column(String(40), unique=True, default=None)
    """Equals ``call_id`` while active, NULL after: the UNIQUE constraint is the one-agent-per-call rule."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    end_reason: Mapped[str32] = mapped_column(default="")
    """``answered``, ``no_answer``, ``timeout``, ``caller_hung_up``, ``cancelled``."""
    callback: Mapped[bool] = mapped_column(default=False)
    """The call is a callback: the platform dials the customer once the agent is ready."""
    why: Mapped[dict[str, Any]] = mapped_column(default=dict)
    owner: Mapped[str64] = mapped_column(default="")
    """Which router process made it (host:pid), for operators reading a stuck reservation."""


class AgentOfferStreak(Base):
    """Offers an agent missed in a row since their last answer (or since being set Not Ready for it)."""

    __tablename__ = "agent_offer_streaks"

    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    consecutive_misses: Mapped[int] = mapped_column(default=0)
    total_misses: Mapped[int] = mapped_column(default=0)
    last_miss_at: Mapped[datetime | None] = mapped_column(default=None)


class TransferRecord(Base):
    """Every transfer, counted with its reason; the segments show the legs, this shows the intent."""

    __tablename__ = "transfers"

    id: Mapped[intpk]
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str32]
    """``blind``, ``warm`` or ``queue``."""
    target_type: Mapped[str32]
    """``agent``, ``queue`` or ``number``."""
    target: Mapped[str64]
    from_agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"), index=True)
    to_agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"), default=None)
    from_segment_id: Mapped[int | None] = mapped_column(ForeignKey("call_segments.id"), default=None)
    reason: Mapped[str64]
    """The transferring agent's reason code (required)."""
    note: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str32] = mapped_column(default="requested")
    """``requested``, ``consulting`` (warm), ``completed``, ``returned`` (warm, declined), ``failed``."""
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
