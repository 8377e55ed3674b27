"""Callbacks that keep the caller's place: the events the dispatcher publishes about them and the
read-only views (one call's callback status, counts per queue) shared by the console and the CLI.

Lifecycle of a queue entry with a ``callback_number`` (see docs/routing-operations.md):
``waiting`` → ``offered`` (agent reserved, their phone rings) → ``dialling`` (agent answered, customer's
phone rings; one more ``callback_attempts``) → ``connected`` (customer answered) → ``done``; or, when
the customer does not answer, back to ``waiting`` in its ORIGINAL place with ``callback_retry_at``, or
``done`` with ``callback_result='given-up'`` after the last attempt. Ids and counts only: the number
is customer data and appears in none of these views.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from callcentre.db.models import QueueEntry
from callcentre.domain.events import Event
from routing.reservations import AGENT_ENDED, CALLBACK_REASONS, GIVEN_UP, NOT_DIALLED


@dataclass(frozen=True)
class CallbackDue(Event):
    """An agent is reserved for a caller who chose a callback, and the telephony backend cannot dial
    (it has no ``call_back``: e.g. a backend without outbound calling). Something outside the backend
    may dial on this event and publish the same events a backend would (``AgentAnswered`` …); if
    nothing does, the reservation expires without counting against the agent and the entry waits
    ``callback_retry_seconds`` with ``callback_result='not-dialled'`` — shown on the wallboard and in
    ``callcentre queues status`` rather than lost silently."""

    agent_id: int
    number: str


@dataclass(frozen=True)
class CallbackProgress(Event):
    """How a callback attempt is going, for the agent's console and the wallboard."""

    agent_id: int
    state: str
    """``dialling`` (agent answered, customer's phone rings), ``connected``, ``retry`` (customer did not
    answer; offered again from ``retry_at``) or ``given-up``."""
    attempt: int
    """This attempt's number (1 for the first dialling of the customer)."""
    max_attempts: int
    reason: str = ""
    """Why the customer did not answer: ``no-answer``, ``busy``, ``rejected``, ``failed``, or ``agent-ended``
    (the agent ended the attempt while the customer's phone rang; not counted as the customer's attempt)."""
    retry_at: datetime | None = None


STATE_LABELS = {
    "ringing": "ringing you — the customer is dialled when you answer",
    "dialling": "dialling the customer",
    "connected": "customer connected",
    "waiting": "waiting for an agent",
    "retry": "customer did not answer",
    GIVEN_UP: "customer did not answer — given up",
    NOT_DIALLED: "not dialled: this telephony backend cannot place callbacks",
}


def hhmm(at: datetime) -> str:
    return at.strftime("%H:%M UTC")


def label(state: str, reason: str = "", retry_at: datetime | None = None) -> str:
    """What the console shows, e.g. ``customer did not answer (busy) — retry at 10:05 UTC``."""
    if reason == AGENT_ENDED and state == "retry":
        # Said to the agent who pressed hang-up, and to whoever opens the entry later.
        return "you ended the attempt" + (f" — retry at {hhmm(retry_at)}" if retry_at is not None else "")
    if reason == AGENT_ENDED and state == GIVEN_UP:
        return "attempts ended by the agent too many times in a row — given up"
    text = STATE_LABELS.get(state, state)
    if state == "retry":
        text += f" ({reason})" if reason else ""
        text += f" — retry at {hhmm(retry_at)}" if retry_at is not None else ""
    return text


def callback_status(db: Session, call_id: str, *, max_attempts: int | None = None) -> dict[str, Any] | None:
    """The callback part of a screen pop: None for a call that is not a callback."""
    entry = db.scalars(select(QueueEntry).where(QueueEntry.call_id == call_id)).one_or_none()
    if entry is None or entry.callback_number is None:
        return None
    result = entry.callback_result
    attempt = entry.callback_attempts
    retry_at = entry.callback_retry_at
    if entry.status == "offered":
        state, attempt = "ringing", attempt + 1  # the agent's answer starts this attempt
    elif entry.status == "dialling":
        state = "dialling"
    elif entry.status in ("connected", "done") and result == "connected":
        state = "connected"
    elif result == GIVEN_UP:
        state = GIVEN_UP
    elif result == NOT_DIALLED:
        state = NOT_DIALLED
    elif entry.status == "waiting" and result in CALLBACK_REASONS:
        state = "retry"
    else:
        state = "waiting"
    return {
        "is_callback": True,
        "state": state,
        "attempt": attempt,
        "max_attempts": max_attempts,
        "last_result": result,
        "reason": result if state == "retry" else "",
        "retry_at": retry_at.isoformat() if retry_at is not None else None,
        "requested_at": entry.callback_requested_at.isoformat() if entry.callback_requested_at else None,
        "label": label(state, result, retry_at),
    }


def callback_counts(db: Session, now: datetime, since: datetime) -> dict[str, dict[str, int]]:
    """Per queue: callbacks ``waiting`` (routable now), ``retry_pending`` (customer did not answer, waiting
    for the retry time), ``not_dialled`` (the backend cannot dial), ``in_progress`` (agent ringing or
    customer being dialled) and ``given_up`` since ``since`` (e.g. the start of today)."""
    out: dict[str, dict[str, int]] = {}

    def bump(queue: str, key: str, n: int) -> None:
        row = out.setdefault(
            queue, {"waiting": 0, "retry_pending": 0, "not_dialled": 0, "in_progress": 0, "given_up": 0}
        )
        row[key] += n

    rows = db.execute(
        select(QueueEntry.queue, QueueEntry.status, QueueEntry.callback_result, QueueEntry.callback_retry_at).where(
            QueueEntry.callback_number.is_not(None), QueueEntry.status.in_(("waiting", "offered", "dialling"))
        )
    ).all()
    for queue, status, result, retry_at in rows:
        if status != "waiting":
            bump(queue, "in_progress", 1)
        elif result == NOT_DIALLED:
            bump(queue, "not_dialled", 1)
        elif retry_at is not None and retry_at > now:
            bump(queue, "retry_pending", 1)
        else:
            bump(queue, "waiting", 1)
    for queue, n in db.execute(
        select(QueueEntry.queue, func.count())
        .where(QueueEntry.callback_result == GIVEN_UP, QueueEntry.updated_at >= since)
        .group_by(QueueEntry.queue)
    ).tuples():
        bump(queue, "given_up", int(n))
    return out
