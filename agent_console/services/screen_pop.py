"""Screen pop: everything an agent should see the moment a call is offered.

IVR context (verified items marked, sensitive ones masked), the router's "why", notes left by
agents who transferred the call, the customer record with earlier calls, transcripts and
satisfaction scores, and similar resolved calls; for a callback, whose callback it is, which attempt
and how it is going. Read-only; one session, a handful of queries.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agent_console.services.similar import find_similar
from callcentre.db.base import utcnow
from callcentre.db.models import (
    Agent,
    Call,
    CallContextItem,
    CallSegment,
    Customer,
    Disposition,
    Queue,
    Recording,
    SurveyResponse,
    Transcript,
)
from routing.callbacks import callback_status

MASK = "••••"
HISTORY_LIMIT = 10


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def context_items(db: Session, call_id: str) -> list[dict[str, Any]]:
    items = db.scalars(select(CallContextItem).where(CallContextItem.call_id == call_id).order_by(CallContextItem.id))
    return [
        {
            "key": i.key,
            "label": i.key.replace("_", " ").capitalize(),
            "value": MASK if i.sensitive else i.value,
            "verified": i.verified,
            "sensitive": i.sensitive,
            "step": i.step,
        }
        for i in items
    ]


def segments(db: Session, call_id: str, names: dict[int, str]) -> list[dict[str, Any]]:
    out = []
    for s in db.scalars(select(CallSegment).where(CallSegment.call_id == call_id).order_by(CallSegment.id)):
        out.append(
            {
                "id": s.id,
                "agent_id": s.agent_id,
                "agent": names.get(s.agent_id or 0, ""),
                "offered_at": _iso(s.offered_at),
                "started_at": _iso(s.started_at),
                "ended_at": _iso(s.ended_at),
                "end_reason": s.end_reason,
                "transfer_kind": s.transfer_kind,
                "transfer_reason": s.transfer_reason,
                "transfer_note": s.transfer_note,
                "transfer_target": s.transfer_target,
            }
        )
    return out


def customer_record(db: Session, customer: Customer, exclude_call: str) -> dict[str, Any]:
    calls = list(
        db.scalars(
            select(Call)
            .where(Call.customer_id == customer.id, Call.id != exclude_call)
            .order_by(Call.arrived_at.desc())
            .limit(HISTORY_LIMIT)
        )
    )
    ids = [c.id for c in calls]
    labels = dict(db.execute(select(Disposition.code, Disposition.label)).tuples().all())
    queue_names = dict(db.execute(select(Queue.id, Queue.name)).tuples().all())
    transcripts: dict[str, list[str]] = {}
    recordings: dict[str, list[int]] = {}
    scores: dict[str, int | None] = {}
    agents_by_call: dict[str, list[str]] = {}
    if ids:
        for t in db.scalars(select(Transcript).where(Transcript.call_id.in_(ids))):
            transcripts.setdefault(t.call_id, []).append(t.text)
        for r in db.scalars(select(Recording).where(Recording.call_id.in_(ids), Recording.purged_at.is_(None))):
            recordings.setdefault(r.call_id, []).append(r.id)
        for s in db.scalars(select(SurveyResponse).where(SurveyResponse.call_id.in_(ids))):
            scores[s.call_id] = s.score
        for call_id, name in db.execute(
            select(CallSegment.call_id, Agent.name)
            .join(Agent, Agent.id == CallSegment.agent_id)
            .where(CallSegment.call_id.in_(ids), CallSegment.started_at.is_not(None))
            .order_by(CallSegment.id)
        ).tuples():
            agents_by_call.setdefault(call_id, []).append(name)
    score_row = db.execute(
        select(func.avg(SurveyResponse.score), func.count(SurveyResponse.score)).where(
            SurveyResponse.customer_id == customer.id, SurveyResponse.score.is_not(None)
        )
    ).one()
    return {
        "id": customer.id,
        "name": customer.name,
        "account_number": customer.account_number,
        "tier": customer.tier,
        "language": customer.language,
        "notes": customer.notes,
        "phones": [{"number": p.number, "label": p.label} for p in customer.phones],
        "satisfaction": {
            "mean": round(float(score_row[0]), 2) if score_row[0] is not None else None,
            "count": int(score_row[1]),
        },
        "history": [
            {
                "call_id": c.id,
                "arrived_at": _iso(c.arrived_at),
                "reason": c.reason,
                "queue": queue_names.get(c.queue_id or 0, ""),
                "outcome": c.outcome,
                "disposition": c.disposition,
                "disposition_label": labels.get(c.disposition, c.disposition),
                "resolved": c.resolved,
                "note": c.wrap_up_note,
                "agents": agents_by_call.get(c.id, []),
                "transcripts": transcripts.get(c.id, []),
                "recordings": recordings.get(c.id, []),
                "satisfaction": scores.get(c.id),
            }
            for c in calls
        ],
    }


def build_screen_pop(
    db: Session, call_id: str, viewer_agent_id: int | None = None, *, callback_max_attempts: int | None = None
) -> dict[str, Any] | None:
    """The whole screen pop for ``call_id`` as JSON-ready data, or None if there is no such call.
    ``callback`` is None for an ordinary call, else :func:`routing.callbacks.callback_status`."""
    call = db.get(Call, call_id)
    if call is None:
        return None
    names = dict(db.execute(select(Agent.id, Agent.name)).tuples().all())
    queue = db.get(Queue, call.queue_id) if call.queue_id else None
    since = call.queued_at or call.arrived_at
    customer = db.get(Customer, call.customer_id) if call.customer_id else None
    segs = segments(db, call.id, names)
    return {
        "call": {
            "id": call.id,
            "state": call.state,
            "reason": call.reason,
            "queue": queue.name if queue else "",
            "priority": call.priority,
            "language": call.language,
            "unidentified": call.unidentified,
            "caller_id": call.caller_id,
            "arrived_at": _iso(call.arrived_at),
            "queued_at": _iso(call.queued_at),
            "answered_at": _iso(call.answered_at),
            "waited_seconds": round((utcnow() - since).total_seconds(), 1) if since else None,
            "required_skills": call.required_skills,
            "route_why": call.route_why,
        },
        "callback": callback_status(db, call.id, max_attempts=callback_max_attempts),
        "ivr": context_items(db, call.id),
        "segments": segs,
        "transfer_notes": [s for s in segs if s["transfer_note"]],
        "customer": customer_record(db, customer, call.id) if customer else None,
        "similar": [s.as_dict() for s in find_similar(db, call)],
    }
