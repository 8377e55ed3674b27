"""Console login sessions, kept server-side so logout and expiry are enforced by the server."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from callcentre.db.base import Base, intpk, str64, utcnow


class ConsoleSession(Base):
    """One logged-in browser. The cookie carries only ``token``; everything else lives here."""

    __tablename__ = "console_sessions"

    id: Mapped[intpk]
    token: Mapped[str] = mapped_column(String(64), unique=True)
    """Random id (``secrets.token_urlsafe``) stored in the signed session cookie."""
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    """Set by logout (or an admin); a revoked session never authenticates again."""
    client: Mapped[str64] = mapped_column(default="")
    """Remote address at login (for the audit trail; not customer data)."""
