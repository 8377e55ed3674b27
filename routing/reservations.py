"""Atomic reservations: a call is offered to one agent at a time and an agent gets one call at a time,
however many router processes run against the same database.

How it stays atomic without Python locks (works on SQLite and PostgreSQL alike):

1. every state move is a conditional UPDATE (``... WHERE status = 'waiting'``) and its row count
   decides who won: on SQLite writers are serialised; on PostgreSQL the second UPDATE waits for the
   first one's row lock and then re-checks its WHERE clause against the committed row;
2. a live reservation fills ``active_agent_id`` and ``active_call_id``, both UNIQUE: even a bug or a
   hand-edited agent state cannot create a second live reservation for the same agent or call.

Functions take a :class:`~sqlalchemy.orm.Session`; the caller owns the transaction and must commit
after each call to :func:`reserve` (one reservation per transaction: several in one transaction can
deadlock between processes on PostgreSQL, which locks rows in the order it meets them).
All times are passed in (``now``), so tests move the clock instead of sleeping.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Boolean, CursorResult, Executable, Table, bindparam, case, func, insert, select, update
from sqlalchemy.orm import Session

from callcentre.db.models import Agent, AgentOfferStreak, Call, CallSegment, QueueEntry, Reservation
from callcentre.domain.agent_state import AgentState
from callcentre.domain.call_state import CallState

log = logging.getLogger(__name__)

NOT_READY_REASON = "missed_offers"
"""``agents.state_reason`` when an agent is set Not Ready for missing offers in a row."""

_LIVE_CALL_STATES = (
    CallState.QUEUED.value,
    CallState.TRANSFERRING.value,
    CallState.NEW.value,
    CallState.IVR.value,
)


@dataclass(frozen=True)
class ReservationPolicy:
    ring_seconds: float = 15.0
    """X: how long an agent may let an offer ring before the call goes back to its place."""
    max_consecutive_misses: int = 3
    """M: this many missed offers in a row set the agent Not Ready."""

    def __post_init__(self) -> None:
        if self.ring_seconds <= 0:
            raise ValueError("ring_seconds must be positive")
        if self.max_consecutive_misses < 1:
            raise ValueError("max_consecutive_misses must be at least 1")


@dataclass(frozen=True)
class Offer:
    """A reservation that was made: ring ``agent_id`` for ``call_id`` until ``expires_at``."""

    reservation_id: int
    call_id: str
    agent_id: int
    expires_at: datetime
    callback_number: str | None
    """Set when the caller chose a callback: dial this number instead of bridging a waiting caller."""
    offered_at: datetime


@dataclass(frozen=True)
class Miss:
    """An offer that ended unanswered; the call is back at its original place."""

    call_id: str
    agent_id: int
    reason: str
    """``no_answer`` (the backend gave up ringing) or ``timeout`` (the reservation expired)."""
    consecutive_misses: int
    agent_state: AgentState
    """``available`` again, or ``not_ready`` after M misses in a row."""


@dataclass(frozen=True)
class Cancelled:
    call_id: str
    agent_id: int | None
    """The agent who was ringing (now available again), if any."""
    kept_for_callback: bool
    """The caller hung up after choosing a callback: the entry keeps its place."""


AGENT_ENDED = "agent-ended"
"""``CallbackUnanswered.reason`` when the agent ended the attempt while the customer's phone rang."""
CUSTOMER_REASONS = ("no-answer", "busy", "rejected", "failed")
"""Why the customer did not take a callback; each counts as one of ``callback_max_attempts``."""
CALLBACK_REASONS = (*CUSTOMER_REASONS, AGENT_ENDED)
"""Every ``CallbackUnanswered.reason``; anything else counts as ``failed``."""

CUSTOMER_UNANSWERED = {
    "no-answer": "customer_no_answer",
    "busy": "customer_busy",
    "rejected": "customer_rejected",
    "failed": "customer_unreachable",
    AGENT_ENDED: "agent_ended",
}
"""``call_segments.end_reason`` of an agent's callback leg whose customer never came on the line."""

GIVEN_UP = "given-up"
"""``queue_entries.callback_result`` once the last allowed attempt went unanswered."""
NOT_DIALLED = "not-dialled"
"""``queue_entries.callback_result`` when an agent was reserved but no backend dialled (it cannot)."""


@dataclass(frozen=True)
class CallbackAttempt:
    """What became of a callback whose customer did not answer."""

    call_id: str
    agent_id: int
    result: str
    """``retry`` (back in its ORIGINAL place, offered again from ``retry_at``) or ``given-up``."""
    reason: str
    """One of :data:`CALLBACK_REASONS`."""
    attempts: int
    """Customer attempts counted so far (an ``agent-ended`` one is not counted)."""
    retry_at: datetime | None
    agent_to_wrap_up: bool
    """The agent's state moved On call → Wrap-up (publish it)."""
    agent_ended_in_row: int = 0
    """Attempts ended by their agent in a row, this one included (0 unless ``reason`` is ``agent-ended``)."""


def owner_tag() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


def _rows(session: Session, statement: Executable, params: dict[str, Any] | None = None) -> int:
    result = cast(
        CursorResult[Any],
        session.execute(statement, params, execution_options={"synchronize_session": False}),
    )
    return int(result.rowcount)


# --- entering the queue ---------------------------------------------------------------------------


def enqueue(
    session: Session,
    call_id: str,
    queue: str,
    *,
    now: datetime,
    required_skills: tuple[tuple[str, int], ...] | list[Any] = (),
    priority: int = 0,
    language: str = "en",
    reason: str = "",
    customer_id: int | None = None,
    preferred_agent_id: int | None = None,
) -> QueueEntry:
    """Give the call its place in ``queue``. Enqueueing the same call again changes nothing (the
    place is kept); a call whose earlier wait ended (answered, then transferred to a queue) waits again
    from ``now``."""
    entry = session.scalars(select(QueueEntry).where(QueueEntry.call_id == call_id)).one_or_none()
    if session.get(Call, call_id) is None:
        # The IVR service normally saved the call already; a bare row keeps the foreign key honest.
        session.add(Call(id=call_id, state=CallState.QUEUED.value, arrived_at=now, queued_at=now))
        session.flush()
    skills = _clean_skills(call_id, required_skills)
    if entry is None:
        entry = QueueEntry(
            call_id=call_id,
            queue=queue,
            status="waiting",
            required_skills=skills,
            priority=priority,
            language=language,
            reason=reason,
            customer_id=customer_id,
            preferred_agent_id=preferred_agent_id,
            enqueued_at=now,
            updated_at=now,
        )
        session.add(entry)
    elif entry.status in ("done", "connected", "abandoned"):
        entry.queue, entry.status, entry.required_skills = queue, "waiting", skills
        entry.priority, entry.language, entry.enqueued_at, entry.updated_at = priority, language, now, now
        entry.callback_number, entry.callback_retry_at, entry.callback_result = None, None, ""
        if reason:
            entry.reason = reason
        # A new wait (e.g. after a transfer) has its own preferred agent or none: the old one was served.
        entry.preferred_agent_id = preferred_agent_id
    session.flush()
    return entry


def _clean_skills(call_id: str, raw: Any) -> list[list[Any]]:
    """``[[skill, level], ...]``; a malformed requirement is dropped (and logged by id) rather than
    keeping the caller out of the queue."""
    out: list[list[Any]] = []
    for item in raw or ():
        try:
            skill, level = item
            out.append([str(skill), int(level)])
        except (TypeError, ValueError):
            log.warning("call %s: dropped a malformed skill requirement", call_id)
    return out


def waiting_entries(session: Session, queue: str | None = None, *, due_at: datetime | None = None) -> list[QueueEntry]:
    """Calls waiting for an agent (live callers and callbacks), in order of their places. With
    ``due_at``: only those that may be offered then (a callback waiting for its retry time is left out;
    it still holds its place and counts in :func:`position`)."""
    query = select(QueueEntry).where(QueueEntry.status == "waiting")
    if queue is not None:
        query = query.where(QueueEntry.queue == queue)
    if due_at is not None:
        query = query.where(QueueEntry.callback_retry_at.is_(None) | (QueueEntry.callback_retry_at <= due_at))
    return list(session.scalars(query.order_by(QueueEntry.enqueued_at, QueueEntry.id)))


def position(session: Session, call_id: str) -> int | None:
    """1-based place among the calls waiting in the same queue; 0 while an agent is being offered it;
    None when the call is not waiting."""
    entry = session.scalars(select(QueueEntry).where(QueueEntry.call_id == call_id)).one_or_none()
    if entry is None or entry.status not in ("waiting", "offered"):
        return None
    if entry.status == "offered":
        return 0
    ahead = session.scalar(
        select(func.count())
        .select_from(QueueEntry)
        .where(
            QueueEntry.queue == entry.queue,
            QueueEntry.status == "waiting",
            (QueueEntry.enqueued_at < entry.enqueued_at)
            | ((QueueEntry.enqueued_at == entry.enqueued_at) & (QueueEntry.id < entry.id)),
        )
    )
    return int(ahead or 0) + 1


def request_callback(session: Session, call_id: str, number: str, *, now: datetime) -> bool:
    """The caller pressed the callback key: they may hang up and keep their place. False if the call
    is not waiting (e.g. an agent is already ringing for it) or the number is empty."""
    if not number.strip():
        return False
    return (
        _rows(
            session,
            update(QueueEntry)
            .where(
                QueueEntry.call_id == call_id,
                QueueEntry.status == "waiting",
            )
            .values(callback_number=number.strip(), callback_requested_at=now, updated_at=now),
        )
        == 1
    )


# --- offering -------------------------------------------------------------------------------------


# Built once: reserve() is the hot path (hundreds per second across processes), and prebuilt
# statements with bound parameters skip SQLAlchemy's per-call construction and hit its compile cache.
_entries = cast(Table, QueueEntry.__table__)
_agents = cast(Table, Agent.__table__)
_calls = cast(Table, Call.__table__)
_reservations = cast(Table, Reservation.__table__)

# ``callback_attempts`` counts customer diallings, so offering (and un-offering) leaves it alone: it grows
# when the reserved agent answers and the backend dials (see answered()). A callback waiting for its
# retry time cannot be taken, whichever process or query picked it.
_TAKE_CALL = (
    update(_entries)
    .where(
        _entries.c.call_id == bindparam("c"),
        _entries.c.status == "waiting",
        _entries.c.callback_retry_at.is_(None)
        | (_entries.c.callback_retry_at <= bindparam("now", type_=_entries.c.callback_retry_at.type)),
    )
    .values(status="offered", offers=_entries.c.offers + 1, updated_at=bindparam("now"))
    .returning(_entries.c.callback_number)
)
_UNTAKE_CALL = (
    update(_entries)
    .where(_entries.c.call_id == bindparam("c"), _entries.c.status == "offered")
    .values(status="waiting", offers=_entries.c.offers - 1)
)
_TAKE_AGENT = (
    update(_agents)
    .where(
        _agents.c.id == bindparam("a"),
        _agents.c.state == AgentState.AVAILABLE.value,
        _agents.c.active.is_(True),
    )
    .values(state=AgentState.RINGING.value, state_since=bindparam("now"), state_reason="")
)
_PEEK = select(
    select(_entries.c.status).where(_entries.c.call_id == bindparam("c")).scalar_subquery(),
    select(_agents.c.state).where(_agents.c.id == bindparam("a"), _agents.c.active.is_(True)).scalar_subquery(),
)
_INSERT_RESERVATION = insert(_reservations).returning(_reservations.c.id)
_MARK_CALL_OFFERED = (
    update(_calls)
    .where(_calls.c.id == bindparam("c"))
    .values(
        route_why=bindparam("why", type_=_calls.c.route_why.type),
        state=case(
            (
                _calls.c.state.in_(_LIVE_CALL_STATES) & bindparam("live", type_=Boolean),
                CallState.OFFERING.value,
            ),
            else_=_calls.c.state,
        ),
    )
)


def reserve(
    session: Session,
    call_id: str,
    agent_id: int,
    *,
    now: datetime,
    policy: ReservationPolicy,
    why: dict[str, Any] | None = None,
    owner: str = "",
) -> Offer | None:
    """Reserve ``agent_id`` for ``call_id``, or return None if either was taken meanwhile (by this or
    another process). Commit right after; on an IntegrityError (the UNIQUE safety net) roll back."""
    # A lock-free look first: most lost races are visible before writing, and on SQLite a doomed
    # write would still queue for the single write lock. The conditional UPDATEs below decide.
    peek = session.execute(_PEEK, {"c": call_id, "a": agent_id}).first()
    if peek is None or peek[0] != "waiting" or peek[1] != AgentState.AVAILABLE.value:
        return None
    # Call first, then agent: every process takes row locks in this order, so two of them never
    # wait on each other in a cycle.
    taken = session.execute(_TAKE_CALL, {"c": call_id, "now": now}).all()
    if len(taken) != 1:
        return None
    if _rows(session, _TAKE_AGENT, {"a": agent_id, "now": now}) != 1:
        _rows(session, _UNTAKE_CALL, {"c": call_id})
        return None
    callback_number: str | None = taken[0][0]
    expires_at = now + timedelta(seconds=policy.ring_seconds)
    reservation_id = session.execute(
        _INSERT_RESERVATION,
        {
            "call_id": call_id,
            "agent_id": agent_id,
            "status": "active",
            "active_agent_id": agent_id,
            "active_call_id": call_id,
            "created_at": now,
            "expires_at": expires_at,
            "end_reason": "",
            "callback": callback_number is not None,
            "why": why or {},
            "owner": owner[:64],
        },
    ).scalar_one()
    # A callback's caller hung up long ago (call ended): only the explanation is recorded.
    _rows(session, _MARK_CALL_OFFERED, {"c": call_id, "why": why or {}, "live": callback_number is None})
    return Offer(int(reservation_id), call_id, agent_id, expires_at, callback_number, now)


def reserve_many(
    session: Session,
    pairs: list[tuple[str, int, dict[str, Any] | None]],
    *,
    now: datetime,
    policy: ReservationPolicy,
    owner: str = "",
) -> list[Offer | None]:
    """:func:`reserve` for each ``(call_id, agent_id, why)`` of one router round, in ONE transaction
    (commit once afterwards). Each pair still wins or loses on its own conditional updates.

    Meant for SQLite, where every transaction queues for the single database write lock: one lock
    hand-over per round instead of one per call. On PostgreSQL keep one reservation per transaction
    (two processes locking rows of overlapping batches in different orders can deadlock)."""
    return [
        reserve(session, call_id, agent_id, now=now, policy=policy, why=why, owner=owner)
        for call_id, agent_id, why in pairs
    ]


def active_reservation(session: Session, call_id: str) -> Reservation | None:
    return session.scalars(select(Reservation).where(Reservation.active_call_id == call_id)).one_or_none()


def _offered_segment(session: Session, call_id: str, agent_id: int) -> CallSegment | None:
    return session.scalars(
        select(CallSegment)
        .where(
            CallSegment.call_id == call_id,
            CallSegment.agent_id == agent_id,
            CallSegment.ended_at.is_(None),
        )
        .order_by(CallSegment.id.desc())
    ).first()


def open_offer_segment(session: Session, offer: Offer, *, queue_id: int | None = None) -> CallSegment:
    """The leg the agent's console shows while their phone rings (started on answer, closed on a miss)."""
    segment = CallSegment(
        call_id=offer.call_id, agent_id=offer.agent_id, queue_id=queue_id, offered_at=offer.offered_at
    )
    session.add(segment)
    session.flush()
    return segment


def _close_offer_segment(session: Session, call_id: str, agent_id: int, reason: str, now: datetime) -> None:
    _rows(
        session,
        update(CallSegment)
        .where(
            CallSegment.call_id == call_id,
            CallSegment.agent_id == agent_id,
            CallSegment.started_at.is_(None),
            CallSegment.ended_at.is_(None),
        )
        .values(ended_at=now, end_reason=reason),
    )


def _end(session: Session, call_id: str, agent_id: int, status: str, reason: str, now: datetime) -> bool:
    return (
        _rows(
            session,
            update(Reservation)
            .where(
                Reservation.call_id == call_id,
                Reservation.agent_id == agent_id,
                Reservation.status == "active",
            )
            .values(status=status, end_reason=reason, ended_at=now, active_agent_id=None, active_call_id=None),
        )
        == 1
    )


_segments = cast(Table, CallSegment.__table__)
_streaks = cast(Table, AgentOfferStreak.__table__)

_END_ANSWERED = (
    update(_reservations)
    .where(
        _reservations.c.call_id == bindparam("c"),
        _reservations.c.agent_id == bindparam("a"),
        _reservations.c.status == "active",
    )
    .values(
        status="answered",
        end_reason="answered",
        ended_at=bindparam("now"),
        active_agent_id=None,
        active_call_id=None,
    )
    .returning(_reservations.c.created_at)
)
_IS_CALLBACK = _entries.c.callback_number.is_not(None)
# A callback's agent answering is one dialling of the customer: the entry is ``dialling`` (not routable,
# not yet connected) until CallbackAnswered / CallbackUnanswered.
_ENTRY_CONNECTED = (
    update(_entries)
    .where(_entries.c.call_id == bindparam("c"))
    .values(
        status=case((_IS_CALLBACK, "dialling"), else_="connected"),
        callback_attempts=_entries.c.callback_attempts + case((_IS_CALLBACK, 1), else_=0),
        callback_result=case((_IS_CALLBACK, "dialling"), else_=_entries.c.callback_result),
        callback_retry_at=None,
        updated_at=bindparam("now"),
    )
    .returning(_entries.c.callback_number)
)
_AGENT_ON_CALL = (
    update(_agents)
    .where(_agents.c.id == bindparam("a"))
    .values(state=AgentState.ON_CALL.value, state_since=bindparam("now"), state_reason="")
)
_STREAK_RESET = update(_streaks).where(_streaks.c.agent_id == bindparam("a")).values(consecutive_misses=0)
_CALL_CONNECTED = (
    update(_calls)
    .where(_calls.c.id == bindparam("c"))
    .values(
        answered_at=func.coalesce(_calls.c.answered_at, bindparam("now", type_=_calls.c.answered_at.type)),
        state=case((_calls.c.state == CallState.ENDED.value, _calls.c.state), else_=CallState.CONNECTED.value),
    )
    .returning(_calls.c.queue_id)
)
_START_SEGMENT = (
    update(_segments)
    .where(
        _segments.c.call_id == bindparam("c"),
        _segments.c.agent_id == bindparam("a"),
        _segments.c.ended_at.is_(None),
    )
    .values(started_at=func.coalesce(_segments.c.started_at, bindparam("now", type_=_segments.c.started_at.type)))
    .returning(_segments.c.id)
)


def answered(session: Session, call_id: str, agent_id: int, *, now: datetime) -> CallSegment | None:
    """The agent answered: reservation done, agent On call, call connected, the offered segment
    started (or opened, if the offer had none). None if there was no live reservation (it timed out
    first, or the caller left).

    A callback is different until the customer picks up: the entry becomes ``dialling`` with one more
    ``callback_attempts``, the agent is On call, but the segment is not started and the call gets no
    ``answered_at`` (the customer is not on the line yet; :func:`callback_connected` does both). So an
    attempt nobody answered never counts as an answered call or as an agent who handled it."""
    ended = session.execute(_END_ANSWERED, {"c": call_id, "a": agent_id, "now": now}).first()
    if ended is None:
        return None
    key = {"c": call_id, "a": agent_id, "now": now}
    entry = session.execute(_ENTRY_CONNECTED, key).first()
    callback = entry is not None and entry[0] is not None
    _rows(session, _AGENT_ON_CALL, key)
    _rows(session, _STREAK_RESET, key)
    if callback:
        _rows(session, update(Call).where(Call.id == call_id).values(outcome="callback"))
        segment = _offered_segment(session, call_id, agent_id)
        if segment is None:
            queue_id = session.scalar(select(Call.queue_id).where(Call.id == call_id))
            segment = CallSegment(call_id=call_id, agent_id=agent_id, queue_id=queue_id, offered_at=ended[0])
            session.add(segment)
            session.flush()
        return segment
    call = session.execute(_CALL_CONNECTED, key).first()
    started = session.execute(_START_SEGMENT, key).scalars().all()
    if started:
        segment = session.get(CallSegment, max(started), populate_existing=True)
        assert segment is not None
        return segment
    segment = CallSegment(
        call_id=call_id,
        agent_id=agent_id,
        queue_id=call[0] if call is not None else None,
        offered_at=ended[0],
        started_at=now,
    )
    session.add(segment)
    session.flush()
    return segment


def missed(
    session: Session,
    call_id: str,
    agent_id: int,
    *,
    now: datetime,
    policy: ReservationPolicy,
    reason: str = "no_answer",
) -> Miss | None:
    """The agent did not answer: the call goes back to its ORIGINAL place (its entry keeps
    ``enqueued_at`` and id), the agent's miss streak grows, and after M in a row they go Not Ready.
    None if the reservation was already ended (another process handled the same timeout)."""
    if not _end(session, call_id, agent_id, "missed", reason, now):
        return None
    _close_offer_segment(session, call_id, agent_id, "no_answer", now)
    _rows(
        session,
        update(QueueEntry)
        .where(QueueEntry.call_id == call_id, QueueEntry.status == "offered")
        .values(status="waiting", updated_at=now),
    )
    _rows(
        session,
        update(Call)
        .where(Call.id == call_id, Call.state == CallState.OFFERING.value)
        .values(state=CallState.QUEUED.value),
    )
    if (
        _rows(
            session,
            update(AgentOfferStreak)
            .where(AgentOfferStreak.agent_id == agent_id)
            .values(
                consecutive_misses=AgentOfferStreak.consecutive_misses + 1,
                total_misses=AgentOfferStreak.total_misses + 1,
                last_miss_at=now,
            ),
        )
        == 0
    ):
        # One live reservation per agent means no other process can be inserting this row now.
        session.add(AgentOfferStreak(agent_id=agent_id, consecutive_misses=1, total_misses=1, last_miss_at=now))
        session.flush()
    streak = int(
        session.scalar(select(AgentOfferStreak.consecutive_misses).where(AgentOfferStreak.agent_id == agent_id)) or 0
    )
    if streak >= policy.max_consecutive_misses:
        state = AgentState.NOT_READY
        _rows(
            session,
            update(AgentOfferStreak).where(AgentOfferStreak.agent_id == agent_id).values(consecutive_misses=0),
        )
        values: dict[str, Any] = {"state": state.value, "state_reason": NOT_READY_REASON, "state_since": now}
    else:
        state = AgentState.AVAILABLE
        values = {"state": state.value, "state_reason": "", "state_since": now}
    _rows(
        session,
        update(Agent).where(Agent.id == agent_id, Agent.state == AgentState.RINGING.value).values(**values),
    )
    return Miss(call_id, agent_id, reason, streak, state)


def expire_overdue(
    session: Session,
    *,
    now: datetime,
    policy: ReservationPolicy,
    limit: int = 100,
    callbacks_dialled: bool = True,
    callback_retry_seconds: float = 300.0,
) -> list[Miss]:
    """Treat every reservation past ``expires_at`` as missed (``reason='timeout'``). Safe to run in
    every router process at once: each expired reservation is handled by exactly one of them.

    ``callbacks_dialled=False`` (the backend cannot dial): an expired callback reservation is not the
    agent's miss but :func:`callback_not_dialled`, so agents are not set Not Ready for it."""
    overdue = session.execute(
        select(Reservation.call_id, Reservation.agent_id, Reservation.callback)
        .where(Reservation.status == "active", Reservation.expires_at <= now)
        .order_by(Reservation.expires_at)
        .limit(limit)
    ).all()
    out: list[Miss] = []
    for call_id, agent_id, callback in overdue:
        if callback and not callbacks_dialled:
            miss = callback_not_dialled(session, call_id, agent_id, now=now, retry_seconds=callback_retry_seconds)
        else:
            miss = missed(session, call_id, agent_id, now=now, policy=policy, reason="timeout")
        if miss is not None:
            out.append(miss)
    return out


def cancel_call(session: Session, call_id: str, *, now: datetime, reason: str = "caller_hung_up") -> Cancelled:
    """The caller left. A ringing agent is released (their miss streak is untouched: not their fault).
    The queue entry is abandoned, unless the caller had chosen a callback: then it keeps its place."""
    reservation = session.scalars(select(Reservation).where(Reservation.active_call_id == call_id)).one_or_none()
    agent_id: int | None = None
    entry = session.scalars(select(QueueEntry).where(QueueEntry.call_id == call_id)).one_or_none()
    keep = entry is not None and entry.callback_number is not None
    if (
        reservation is not None
        and not reservation.callback
        and _end(session, call_id, reservation.agent_id, "cancelled", reason, now)
    ):
        agent_id = reservation.agent_id
        _close_offer_segment(session, call_id, agent_id, "abandoned", now)
        _rows(
            session,
            update(Agent)
            .where(Agent.id == agent_id, Agent.state == AgentState.RINGING.value)
            .values(state=AgentState.AVAILABLE.value, state_since=now, state_reason=""),
        )
    if entry is not None and not keep:
        _rows(
            session,
            update(QueueEntry)
            .where(
                QueueEntry.call_id == call_id,
                QueueEntry.status.in_(("waiting", "offered")),
            )
            .values(status="abandoned", updated_at=now),
        )
    return Cancelled(call_id, agent_id, keep)


# --- callbacks (the platform dials the customer for the reserved agent) ----------------------------


def callback_connected(session: Session, call_id: str, agent_id: int, *, now: datetime) -> CallSegment | None:
    """The customer picked up the callback: the agent's leg starts now, the call is answered (its wait
    runs from the original place in the queue to this moment). None if no attempt was being dialled."""
    if (
        _rows(
            session,
            update(QueueEntry)
            .where(QueueEntry.call_id == call_id, QueueEntry.status == "dialling")
            .values(status="connected", callback_result="connected", updated_at=now),
        )
        != 1
    ):
        return None
    _rows(
        session,
        update(Call)
        .where(Call.id == call_id)
        .values(answered_at=func.coalesce(Call.answered_at, now), outcome="callback"),
    )
    segment = _offered_segment(session, call_id, agent_id)
    if segment is None:
        segment = CallSegment(call_id=call_id, agent_id=agent_id, offered_at=now)
        session.add(segment)
    segment.started_at = now
    session.flush()
    return segment


def callback_unanswered(
    session: Session,
    call_id: str,
    agent_id: int,
    *,
    now: datetime,
    retry_seconds: float,
    max_attempts: int,
    reason: str = "no-answer",
) -> CallbackAttempt | None:
    """The customer did not take the callback. The agent's leg is closed with an end reason saying so
    (``customer_busy`` …) and the agent goes to Wrap-up as after any call. The entry goes back to
    ``waiting`` at its ORIGINAL place (``enqueued_at`` and id untouched) but is not offered before
    ``now + retry_seconds`` — or, after ``max_attempts`` diallings, it is ``done``, ``callback_result``
    ``given-up`` and the call's outcome ``callback_failed``. None if no attempt was being dialled
    (a repeated or stale event).

    ``agent-ended`` (the agent gave up while the customer's phone rang) is not the customer's attempt:
    ``callback_attempts`` is given back, the entry waits ``retry_seconds`` in its place all the same, and
    only ``max_attempts`` agent-ended attempts IN A ROW give it up (so an agent loop cannot keep it forever)."""
    reason = reason if reason in CALLBACK_REASONS else "failed"
    entry = session.scalars(
        select(QueueEntry).where(QueueEntry.call_id == call_id, QueueEntry.status == "dialling")
    ).one_or_none()
    if entry is None:
        return None
    _rows(
        session,
        update(CallSegment)
        .where(
            CallSegment.call_id == call_id,
            CallSegment.agent_id == agent_id,
            CallSegment.ended_at.is_(None),
        )
        .values(ended_at=now, end_reason=CUSTOMER_UNANSWERED[reason]),
    )
    to_wrap_up = (
        _rows(
            session,
            update(Agent)
            .where(Agent.id == agent_id, Agent.state == AgentState.ON_CALL.value)
            .values(state=AgentState.WRAP_UP.value, state_since=now, state_reason=""),
        )
        == 1
    )
    in_row = 0
    if reason == AGENT_ENDED:
        entry.callback_attempts = max(0, entry.callback_attempts - 1)  # the customer had no fair chance
        in_row = agent_ended_in_row(session, call_id)
    attempts = entry.callback_attempts
    exhausted = in_row >= max_attempts if reason == AGENT_ENDED else attempts >= max_attempts
    if not exhausted:
        retry_at: datetime | None = now + timedelta(seconds=retry_seconds)
        entry.status, entry.callback_retry_at, entry.callback_result = "waiting", retry_at, reason
        result = "retry"
    else:
        retry_at = None
        entry.status, entry.callback_retry_at, entry.callback_result = "done", None, GIVEN_UP
        result = GIVEN_UP
        _rows(session, update(Call).where(Call.id == call_id).values(outcome="callback_failed"))
    entry.updated_at = now
    session.flush()
    return CallbackAttempt(call_id, agent_id, result, reason, attempts, retry_at, to_wrap_up, in_row)


_DIALLED_ENDS = frozenset(CUSTOMER_UNANSWERED.values())


def agent_ended_in_row(session: Session, call_id: str) -> int:
    """How many of this callback's latest diallings (newest first, up to one the customer's phone decided
    or an answered one) were ended by their agent. Derived from the legs' end reasons, so no counter
    column is needed; offers the agent never answered are not diallings and are skipped."""
    count = 0
    for end_reason, started in session.execute(
        select(CallSegment.end_reason, CallSegment.started_at)
        .where(CallSegment.call_id == call_id, CallSegment.ended_at.is_not(None))
        .order_by(CallSegment.id.desc())
    ):
        if started is not None:
            break  # an answered callback (or the original live call) resets the streak
        if end_reason not in _DIALLED_ENDS:
            continue
        if end_reason != CUSTOMER_UNANSWERED[AGENT_ENDED]:
            break
        count += 1
    return count


def callback_not_dialled(
    session: Session, call_id: str, agent_id: int, *, now: datetime, retry_seconds: float
) -> Miss | None:
    """A callback reservation expired and nobody dialled (the backend cannot): the agent is released
    without a miss on their streak, the entry keeps its place with ``callback_result='not-dialled'``
    and waits ``retry_seconds`` so it does not tie up an agent every second. No attempt is counted."""
    # "cancelled", not "missed": it was not the agent's miss, so the router need not avoid them next time.
    if not _end(session, call_id, agent_id, "cancelled", "not_dialled", now):
        return None
    _close_offer_segment(session, call_id, agent_id, "not_dialled", now)
    _rows(
        session,
        update(QueueEntry)
        .where(QueueEntry.call_id == call_id, QueueEntry.status == "offered")
        .values(
            status="waiting",
            callback_retry_at=now + timedelta(seconds=retry_seconds),
            callback_result=NOT_DIALLED,
            updated_at=now,
        ),
    )
    _rows(
        session,
        update(Agent)
        .where(Agent.id == agent_id, Agent.state == AgentState.RINGING.value)
        .values(state=AgentState.AVAILABLE.value, state_since=now, state_reason=""),
    )
    return Miss(call_id, agent_id, "not_dialled", consecutive_misses(session, agent_id), AgentState.AVAILABLE)


def finish(session: Session, call_id: str, *, now: datetime) -> None:
    """The call is over for routing purposes (completed after an agent, or its callback is done)."""
    _rows(session, update(QueueEntry).where(QueueEntry.call_id == call_id).values(status="done", updated_at=now))


def consecutive_misses(session: Session, agent_id: int) -> int:
    value = session.scalar(select(AgentOfferStreak.consecutive_misses).where(AgentOfferStreak.agent_id == agent_id))
    return int(value or 0)


def double_assignments(session: Session) -> tuple[int, int]:
    """Audit: (agents with more than one live reservation, calls offered to more than one agent at once),
    and answered reservations of the same call by two agents with no transfer in between. Always (0, 0)
    unless the database lost its constraints; benchmarks and tests assert it."""
    agents = session.scalar(
        select(func.count()).select_from(
            select(Reservation.agent_id)
            .where(Reservation.status == "active")
            .group_by(Reservation.agent_id)
            .having(func.count() > 1)
            .subquery()
        )
    )
    calls = session.scalar(
        select(func.count()).select_from(
            select(Reservation.call_id)
            .where(Reservation.status.in_(("active", "answered")))
            .group_by(Reservation.call_id)
            .having(func.count() > 1)
            .subquery()
        )
    )
    return int(agents or 0), int(calls or 0)
