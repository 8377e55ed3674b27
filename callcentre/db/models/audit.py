"""Audit log: logins, recording playbacks, administrative changes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from callcentre.db.base import Base, intpk, str64, utcnow


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[intpk]
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"), default=None)
    actor: Mapped[str64] = mapped_column(default="system")
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(128), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Never customer data: ids and outcomes only."""
