"""Transfers: blind, warm (consult, then complete or return) and to a queue.

Whatever the kind, the same things travel with the call: the CallContext the IVR collected (it stays
on the call row, nobody asks again), and the transferring agent's reason code and note (a
:class:`~callcentre.db.models.TransferRecord` plus the closed segment). The receiving agent reads
:func:`handover`: the context, every earlier leg and every transfer with its reason and note.
Every transfer is a row, so :func:`transfer_counts` counts them by reason.

Functions take a Session and raise :class:`TransferError` before changing anything the caller would
have to undo, except where noted (then the caller rolls back, as with any failed unit of work).
The agent leg itself is the telephony backend's job; :class:`routing.dispatcher.Dispatcher` does both.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from callcentre.db.models import Agent, Call, CallContextItem, CallSegment, QueueEntry, TransferRecord
from callcentre.domain.call_state import CallState
from callcentre.domain.errors import CallCentreError
from routing import reservations

KINDS = {"blind": ("agent", "queue", "number"), "warm": ("agent",), "queue": ("queue",)}
"""Transfer kind → target types it accepts. A warm transfer consults an agent of ours."""

QUEUE_TRANSFER_PRIORITY_BOOST = 1
"""A transferred caller has waited once already: they go ahead of equal-priority first-time callers."""


class TransferError(CallCentreError):
    """A transfer that cannot happen; the message says why and the call is unchanged."""

    def __init__(self, call_id: str, message: str) -> None:
        super().__init__(f"call {call_id}: {message}")
        self.call_id = call_id


@dataclass(frozen=True)
class TransferRequest:
    call_id: str
    from_agent_id: int
    kind: str
    """``blind``, ``warm`` or ``queue``."""
    target_type: str
    """``agent``, ``queue`` or ``number``."""
    target: str
    """Agent id (as text), queue name or phone number."""
    reason: str
    """The transferring agent's reason code: required, it is what transfers are counted by."""
    note: str = ""


def validate(request: TransferRequest) -> TransferRequest:
    """Pure checks; returns the request with reason/note/target trimmed."""
    kind, target_type = request.kind.strip().lower(), request.target_type.strip().lower()
    if kind not in KINDS:
        raise TransferError(request.call_id, f"unknown transfer kind {request.kind!r}; choose {sorted(KINDS)}")
    if target_type not in KINDS[kind]:
        raise TransferError(
            request.call_id, f"a {kind} transfer goes to {' or '.join(KINDS[kind])}, not {target_type!r}"
        )
    target, reason = request.target.strip(), request.reason.strip()
    if not target:
        raise TransferError(request.call_id, "a transfer needs a target")
    if not reason:
        raise TransferError(request.call_id, "a transfer needs a reason code")
    if len(reason) > 64 or len(target) > 64:
        raise TransferError(request.call_id, "reason code and target are limited to 64 characters")
    if target_type == "agent" and not target.isdigit():
        raise TransferError(request.call_id, f"agent target must be an agent id, got {target!r}")
    return TransferRequest(
        request.call_id, request.from_agent_id, kind, target_type, target, reason, request.note.strip()
    )


def _open_segment(session: Session, call_id: str, agent_id: int) -> CallSegment:
    segment = session.scalars(
        select(CallSegment)
        .where(
            CallSegment.call_id == call_id,
            CallSegment.agent_id == agent_id,
            CallSegment.started_at.is_not(None),
            CallSegment.ended_at.is_(None),
        )
        .order_by(CallSegment.id.desc())
    ).first()
    if segment is None:
        raise TransferError(call_id, f"agent {agent_id} is not on this call")
    return segment


def _close_segment(segment: CallSegment, record: TransferRecord, now: datetime) -> None:
    segment.ended_at = now
    segment.end_reason = "transferred"
    segment.transfer_kind = record.kind
    segment.transfer_reason = record.reason
    segment.transfer_note = record.note
    segment.transfer_target = f"{record.target_type}:{record.target}"


def _agent_to_wrap_up(session: Session, agent_id: int, now: datetime) -> None:
    agent = session.get(Agent, agent_id)
    if agent is not None:
        agent.state, agent.state_since, agent.state_reason = "wrap_up", now, ""


def _offer_to_agent(
    session: Session,
    call_id: str,
    queue: str,
    agent_id: int,
    *,
    now: datetime,
    policy: reservations.ReservationPolicy,
    why: dict[str, Any],
) -> reservations.Offer:
    reservations.enqueue(session, call_id, queue, now=now, preferred_agent_id=agent_id)
    offer = reservations.reserve(session, call_id, agent_id, now=now, policy=policy, why=why)
    if offer is None:
        raise TransferError(call_id, f"agent {agent_id} is not available")
    reservations.open_offer_segment(session, offer)
    return offer


def start(
    session: Session, request: TransferRequest, *, now: datetime, policy: reservations.ReservationPolicy
) -> tuple[TransferRecord, reservations.Offer | None]:
    """Begin a transfer. Returns the record and, for a transfer to an agent, the reservation to ring.

    * blind to agent / number, to queue: the first agent's segment closes now (they go to wrap-up);
      the call waits for the target (queue: at the front of equal priority, see the boost above);
    * warm to agent: the first agent stays on the call (the caller is held) while the target rings and
      consults; then :func:`complete_warm` or :func:`return_warm`.

    On a TransferError raised after the queue entry was reopened, roll the session back.
    """
    request = validate(request)
    call = session.get(Call, request.call_id)
    if call is None or call.state == CallState.ENDED.value:
        raise TransferError(request.call_id, "the call is not active")
    segment = _open_segment(session, request.call_id, request.from_agent_id)
    if request.target_type == "agent" and int(request.target) == request.from_agent_id:
        raise TransferError(request.call_id, "cannot transfer a call to yourself")
    if (
        request.kind == "warm"
        and session.scalars(
            select(TransferRecord).where(
                TransferRecord.call_id == request.call_id, TransferRecord.status == "consulting"
            )
        ).first()
    ):
        raise TransferError(request.call_id, "a consultation is already in progress")
    record = TransferRecord(
        call_id=request.call_id,
        kind=request.kind,
        target_type=request.target_type,
        target=request.target,
        from_agent_id=request.from_agent_id,
        from_segment_id=segment.id,
        reason=request.reason,
        note=request.note,
        status="requested",
        requested_at=now,
    )
    session.add(record)
    entry = session.scalars(select(QueueEntry).where(QueueEntry.call_id == request.call_id)).one_or_none()
    queue = entry.queue if entry is not None else "transfers"
    why = {"rules": [f"{request.kind} transfer from agent {request.from_agent_id}"], "reason": request.reason}
    offer: reservations.Offer | None = None
    call.state = CallState.TRANSFERRING.value
    if request.target_type == "agent":
        offer = _offer_to_agent(session, request.call_id, queue, int(request.target), now=now, policy=policy, why=why)
        record.to_agent_id = offer.agent_id
    elif request.target_type == "queue":
        target_priority = (entry.priority if entry is not None else 0) + QUEUE_TRANSFER_PRIORITY_BOOST
        skills = entry.required_skills if entry is not None and entry.queue == request.target else []
        reservations.enqueue(
            session,
            request.call_id,
            request.target,
            now=now,
            priority=target_priority,
            required_skills=[(s, lv) for s, lv in skills],
            language=call.language,
            reason=call.reason,
            customer_id=call.customer_id,
        )
        call.state = CallState.QUEUED.value
    if request.kind == "warm":
        record.status = "consulting"
    else:
        _close_segment(segment, record, now)
        _agent_to_wrap_up(session, request.from_agent_id, now)
        record.status = "completed" if request.target_type == "number" else "requested"
        if request.target_type == "number":
            record.completed_at = now
            call.outcome = "transferred_out"
            call.state = CallState.ENDED.value
            call.ended_at = now
            reservations.finish(session, request.call_id, now=now)
    session.flush()
    return record, offer


def on_answered(session: Session, call_id: str, agent_id: int, *, now: datetime) -> TransferRecord | None:
    """A reserved agent answered a call that was being transferred: a blind or queue transfer is
    complete (the new agent is recorded); a warm one has its consultation connected."""
    record = session.scalars(
        select(TransferRecord)
        .where(TransferRecord.call_id == call_id, TransferRecord.status.in_(("requested", "consulting")))
        .order_by(TransferRecord.id.desc())
    ).first()
    if record is None:
        return None
    record.to_agent_id = agent_id
    if record.status == "requested":
        record.status, record.completed_at = "completed", now
    return record


def _consulted_on_call(session: Session, record: TransferRecord) -> bool:
    """Whether the consulted agent of ``record`` answered (their leg is started and still open)."""
    return (
        session.scalars(
            select(CallSegment).where(
                CallSegment.call_id == record.call_id,
                CallSegment.agent_id == record.to_agent_id,
                CallSegment.ended_at.is_(None),
                CallSegment.started_at.is_not(None),
            )
        ).first()
        is not None
    )


def _first_agent_leaves(session: Session, record: TransferRecord, now: datetime) -> None:
    """The transferring agent's part of a warm transfer ends: segment closed as transferred, wrap-up."""
    segment = session.get(CallSegment, record.from_segment_id) if record.from_segment_id else None
    if segment is not None and segment.ended_at is None:
        _close_segment(segment, record, now)
    if record.from_agent_id is not None:
        _agent_to_wrap_up(session, record.from_agent_id, now)


def complete_warm(session: Session, transfer_id: int, *, now: datetime) -> TransferRecord:
    """The first agent hands over after consulting: their segment closes, the consulted agent has the call."""
    record = session.get(TransferRecord, transfer_id)
    if record is None or record.status != "consulting" or record.to_agent_id is None:
        raise TransferError(record.call_id if record else "?", "no consultation to complete")
    if not _consulted_on_call(session, record):
        raise TransferError(record.call_id, "the consulted agent has not answered yet")
    _first_agent_leaves(session, record, now)
    record.status, record.completed_at = "completed", now
    session.flush()
    return record


# --- the first agent hangs up during the consultation ("attended transfer on hang-up") -------------


def _consulting(session: Session, call_id: str, from_agent_id: int) -> TransferRecord | None:
    return session.scalars(
        select(TransferRecord)
        .where(
            TransferRecord.call_id == call_id,
            TransferRecord.kind == "warm",
            TransferRecord.status == "consulting",
            TransferRecord.from_agent_id == from_agent_id,
        )
        .order_by(TransferRecord.id.desc())
    ).first()


def hand_over(session: Session, call_id: str, from_agent_id: int, *, now: datetime) -> TransferRecord | None:
    """The first agent hung up while consulting; the backend kept the caller for the consulted agent.

    * the consulted agent is on the call → exactly :func:`complete_warm`;
    * their phone still rings → the first agent's part ends the same way (segment closed as
      transferred, wrap-up) and the record waits as ``requested``, like a blind transfer to that agent:
      their answer completes it (:func:`on_answered`), their miss fails it (:func:`handover_unanswered`).

    None when there is no consultation of that agent's left to hand over (already handled)."""
    record = _consulting(session, call_id, from_agent_id)
    if record is None or record.to_agent_id is None:
        return None
    if _consulted_on_call(session, record):
        return complete_warm(session, record.id, now=now)
    _first_agent_leaves(session, record, now)
    record.status = "requested"
    session.flush()
    return record


def handover_unanswered(session: Session, call_id: str, agent_id: int, *, now: datetime) -> TransferRecord | None:
    """The consulted agent never answered a consultation whose first agent had already hung up: the
    transfer failed (its reason and note stay on the record for the next agent to read). Returns it so
    the caller can be put back in the queue; None if this miss was not such a handover."""
    record = session.scalars(
        select(TransferRecord)
        .where(
            TransferRecord.call_id == call_id,
            TransferRecord.kind == "warm",
            TransferRecord.status == "requested",
            TransferRecord.to_agent_id == agent_id,
        )
        .order_by(TransferRecord.id.desc())
    ).first()
    if record is None:
        return None
    record.status, record.completed_at = "failed", now
    session.flush()
    return record


def return_warm(session: Session, transfer_id: int, *, now: datetime) -> TransferRecord:
    """The consultation ends without handing over: the first agent keeps the caller. Still recorded
    (status ``returned``) so declined consultations can be counted too."""
    record = session.get(TransferRecord, transfer_id)
    if record is None or record.status != "consulting":
        raise TransferError(record.call_id if record else "?", "no consultation to return from")
    call_id = record.call_id
    live = reservations.active_reservation(session, call_id)
    if live is not None:
        reservations.cancel_call(session, call_id, now=now, reason="consult_returned")
    consulted = (
        session.scalars(
            select(CallSegment).where(
                CallSegment.call_id == call_id,
                CallSegment.agent_id == record.to_agent_id,
                CallSegment.ended_at.is_(None),
            )
        ).first()
        if record.to_agent_id is not None
        else None
    )
    if consulted is not None:
        consulted.ended_at, consulted.end_reason = now, "consult_returned"
        _agent_to_wrap_up(session, consulted.agent_id or 0, now)
    entry = session.scalars(select(QueueEntry).where(QueueEntry.call_id == call_id)).one_or_none()
    if entry is not None:
        entry.status = "connected"
    call = session.get(Call, call_id)
    if call is not None and call.state != CallState.ENDED.value:
        call.state = CallState.CONNECTED.value
    record.status, record.completed_at = "returned", now
    session.flush()
    return record


# --- what the receiving side sees ----------------------------------------------------------------


@dataclass(frozen=True)
class HandoverItem:
    key: str
    value: str
    """Sensitive values are already masked in the database; shown as stored."""
    step: str
    verified: bool


@dataclass(frozen=True)
class HandoverTransfer:
    at: datetime
    kind: str
    from_agent_id: int | None
    to_agent_id: int | None
    target: str
    reason: str
    note: str
    status: str


@dataclass(frozen=True)
class HandoverLeg:
    agent_id: int | None
    started_at: datetime | None
    ended_at: datetime | None
    end_reason: str


@dataclass(frozen=True)
class Handover:
    """Everything the next agent needs; nobody has to ask the caller again."""

    call_id: str
    reason: str
    context: tuple[HandoverItem, ...]
    transfers: tuple[HandoverTransfer, ...]
    legs: tuple[HandoverLeg, ...]

    @property
    def first_reason(self) -> str | None:
        """The first transferring agent's reason code (it travels however many hops follow)."""
        return self.transfers[0].reason if self.transfers else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "reason": self.reason,
            "context": [vars(i) for i in self.context],
            "transfers": [{**vars(t), "at": t.at.isoformat()} for t in self.transfers],
            "legs": [
                {
                    "agent_id": leg.agent_id,
                    "end_reason": leg.end_reason,
                    "started_at": leg.started_at.isoformat() if leg.started_at else None,
                    "ended_at": leg.ended_at.isoformat() if leg.ended_at else None,
                }
                for leg in self.legs
            ],
        }


def handover(session: Session, call_id: str) -> Handover:
    call = session.get(Call, call_id)
    if call is None:
        raise TransferError(call_id, "unknown call")
    items = session.scalars(
        select(CallContextItem).where(CallContextItem.call_id == call_id).order_by(CallContextItem.id)
    )
    transfers = session.scalars(
        select(TransferRecord).where(TransferRecord.call_id == call_id).order_by(TransferRecord.id)
    )
    legs = session.scalars(select(CallSegment).where(CallSegment.call_id == call_id).order_by(CallSegment.id))
    return Handover(
        call_id=call_id,
        reason=call.reason,
        context=tuple(HandoverItem(i.key, i.value, i.step, i.verified) for i in items),
        transfers=tuple(
            HandoverTransfer(
                t.requested_at,
                t.kind,
                t.from_agent_id,
                t.to_agent_id,
                f"{t.target_type}:{t.target}",
                t.reason,
                t.note,
                t.status,
            )
            for t in transfers
        ),
        legs=tuple(HandoverLeg(s.agent_id, s.started_at, s.ended_at, s.end_reason) for s in legs),
    )


def transfer_counts(
    session: Session, *, since: datetime | None = None, include_returned: bool = False
) -> Counter[tuple[str, str]]:
    """Transfers counted by (kind, reason). Returned consultations did not move the caller, so they
    are left out unless asked for; failed ones never count."""
    statuses = ["requested", "consulting", "completed"] + (["returned"] if include_returned else [])
    query = select(TransferRecord.kind, TransferRecord.reason).where(TransferRecord.status.in_(statuses))
    if since is not None:
        query = query.where(TransferRecord.requested_at >= since)
    return Counter((kind, reason) for kind, reason in session.execute(query))
