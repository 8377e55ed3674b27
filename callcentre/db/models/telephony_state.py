"""State of calls on stateless backends (Twilio webhooks), kept so any worker process can continue a call."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from callcentre.db.base import Base, intpk, str32, str64, utcnow


class BackendCall(Base):
    """One call as the provider knows it (Twilio ``CallSid``), mapped to our call id, with its IVR state."""

    __tablename__ = "backend_calls"
    __table_args__ = (UniqueConstraint("backend", "ref"),)

    id: Mapped[intpk]
    backend: Mapped[str32]
    ref: Mapped[str64]
    """The provider's call id (Twilio ``CallSid``)."""
    call_id: Mapped[str] = mapped_column(String(40), index=True)
    ivr_state: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    """``ivr.state.state_to_dict`` of the call while it is in the IVR; ``None`` afterwards."""
    webhook_seq: Mapped[int] = mapped_column(default=0)
    """How many IVR webhooks answered so far; names the next Gather's action URL."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)


class WebhookResponse(Base):
    """The answer given to one webhook delivery, so a provider's retry gets the same answer and no
    second side effect. ``body`` is empty while the first delivery is still being answered."""

    __tablename__ = "webhook_responses"
    __table_args__ = (UniqueConstraint("backend", "ref", "step"),)

    id: Mapped[intpk]
    backend: Mapped[str32]
    ref: Mapped[str64]
    step: Mapped[str64]
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
