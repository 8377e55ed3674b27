"""Audit log entries written by the console: logins, logouts, recording playbacks, supervision."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from callcentre.db.models import AuditEntry


def record(
    session: Session,
    action: str,
    *,
    actor_agent_id: int | None,
    actor: str,
    target: str = "",
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add one entry to ``session`` (the caller commits). ``detail`` holds ids and outcomes only."""
    entry = AuditEntry(action=action, actor_agent_id=actor_agent_id, actor=actor, target=target, detail=detail or {})
    session.add(entry)
    return entry
