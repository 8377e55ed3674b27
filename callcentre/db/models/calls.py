"""Calls, the context the IVR collected once, and each agent leg (segment)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from callcentre.db.base import Base, intpk, str32, str64, utcnow
from callcentre.db.models.fts import fts_index


class Call(Base):
    __tablename__ = "calls"
    __table_args__ = (fts_index("ix_calls_wrap_up_note_fts", "wrap_up_note"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    """Platform call id (``call-`` + hex); backends keep their own reference in ``backend_ref``."""
    backend: Mapped[str32] = mapped_column(default="memory")
    backend_ref: Mapped[str] = mapped_column(String(255), default="", index=True)
    caller_id: Mapped[str64] = mapped_column(default="")
    dialled_number: Mapped[str64] = mapped_column(default="")
    state: Mapped[str32] = mapped_column(default="new", index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    queue_id: Mapped[int | None] = mapped_column(ForeignKey("queues.id"), index=True)
    reason: Mapped[str64] = mapped_column(default="")
    """Reason for calling as the IVR classified it (menu choice / spoken phrase)."""
    required_skills: Mapped[list[Any]] = mapped_column(default=list)
    priority: Mapped[int] = mapped_column(default=0)
    language: Mapped[str] = mapped_column(String(8), default="en")
    unidentified: Mapped[bool] = mapped_column(default=False)
    arrived_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    queued_at: Mapped[datetime | None] = mapped_column(default=None)
    answered_at: Mapped[datetime | None] = mapped_column(default=None)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    outcome: Mapped[str32] = mapped_column(default="")
    """``resolved``, ``unresolved``, ``abandoned``, ``transferred_out``, ``callback``, ``failed`` …"""
    ended_at_step: Mapped[str64] = mapped_column(default="")
    """IVR step the caller was at when the call ended before an agent (abandonment analysis)."""
    route_why: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """The router's explanation of its last decision for this call."""
    disposition: Mapped[str32] = mapped_column(default="")
    resolved: Mapped[bool | None] = mapped_column(default=None)
    wrap_up_note: Mapped[str] = mapped_column(Text, default="")

    context_items: Mapped[list[CallContextItem]] = relationship(
        back_populates="call", cascade="all, delete-orphan", order_by="CallContextItem.id"
    )
    segments: Mapped[list[CallSegment]] = relationship(
        back_populates="call", cascade="all, delete-orphan", order_by="CallSegment.id"
    )


class CallContextItem(Base):
    """One fact the IVR collected, saved once; everything downstream reads it from here."""

    __tablename__ = "call_context"
    __table_args__ = (UniqueConstraint("call_id", "key"),)

    id: Mapped[intpk]
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    key: Mapped[str64]
    value: Mapped[str] = mapped_column(Text)
    step: Mapped[str64]
    """IVR step that collected it."""
    verified: Mapped[bool] = mapped_column(default=False)
    sensitive: Mapped[bool] = mapped_column(default=False)
    """PINs and card numbers: stored masked, never shown or logged."""
    collected_at: Mapped[datetime] = mapped_column(default=utcnow)

    call: Mapped[Call] = relationship(back_populates="context_items")


class CallSegment(Base):
    """One agent leg of a call; a transfer closes a segment and opens the next."""

    __tablename__ = "call_segments"

    id: Mapped[intpk]
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"), index=True)
    queue_id: Mapped[int | None] = mapped_column(ForeignKey("queues.id"))
    offered_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    end_reason: Mapped[str32] = mapped_column(default="")
    """``completed``, ``transferred``, ``no_answer``, ``caller_hung_up`` …"""
    transfer_kind: Mapped[str32] = mapped_column(default="")
    transfer_reason: Mapped[str64] = mapped_column(default="")
    transfer_note: Mapped[str] = mapped_column(Text, default="")
    transfer_target: Mapped[str64] = mapped_column(default="")

    call: Mapped[Call] = relationship(back_populates="segments")
