"""The console's one seam to the metric definitions (routing.reports) and staffing (routing.erlang).

It loads the calls of a period from the database and hands them to the shared definitions; it
defines no metric itself. ``_fallback`` below is used only while ``routing.reports`` is absent.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from callcentre.db.models import Call, CallSegment, Queue, SurveyResponse
from routing.erlang import agents_for_service_level

DEFAULT_AHT_SECONDS = 180.0
STAFFING_WINDOW = timedelta(minutes=30)


def _period_calls(db: Session, queue_id: int | None, start: datetime, end: datetime) -> list[Call]:
    stmt = select(Call).where(Call.queued_at.is_not(None), Call.queued_at >= start, Call.queued_at < end)
    if queue_id is not None:
        stmt = stmt.where(Call.queue_id == queue_id)
    return list(db.scalars(stmt))


def queue_metrics(db: Session, queue: Queue | None, start: datetime, end: datetime) -> dict[str, Any]:
    calls = _period_calls(db, queue.id if queue else None, start, end)
    threshold = queue.sl_target_seconds if queue else 20
    return _fallback(db, calls, threshold)


def _fallback(db: Session, calls: list[Call], threshold: int) -> dict[str, Any]:
    offered = len(calls)
    answered = [c for c in calls if c.answered_at is not None and c.queued_at is not None]
    abandoned = [c for c in calls if c.answered_at is None and c.outcome == "abandoned"]
    waits = [_wait(c) for c in answered]
    within = sum(1 for w in waits if w <= threshold)
    ids = [c.id for c in answered]
    agents_per_call: dict[str, int] = {}
    if ids:
        for call_id, n in db.execute(
            select(CallSegment.call_id, func.count(func.distinct(CallSegment.agent_id)))
            .where(CallSegment.call_id.in_(ids), CallSegment.started_at.is_not(None))
            .group_by(CallSegment.call_id)
        ).tuples():
            agents_per_call[call_id] = int(n)
    transferred = sum(1 for c in answered if agents_per_call.get(c.id, 1) > 1)
    fcr = sum(
        1 for c in answered if c.resolved and agents_per_call.get(c.id, 1) <= 1 and not _repeated(db, c)
    )
    scores = (
        [
            s
            for (s,) in db.execute(
                select(SurveyResponse.score).where(
                    SurveyResponse.call_id.in_([c.id for c in calls]), SurveyResponse.score.is_not(None)
                )
            ).all()
        ]
        if calls
        else []
    )
    return {
        "offered": offered,
        "answered": len(answered),
        "abandoned": len(abandoned),
        "service_level": round(within / offered, 4) if offered else None,
        "asa_seconds": round(sum(waits) / len(waits), 1) if waits else None,
        "abandonment": round(len(abandoned) / offered, 4) if offered else None,
        "transfer_rate": round(transferred / len(answered), 4) if answered else None,
        "fcr": round(fcr / len(answered), 4) if answered else None,
        "csat_mean": round(sum(scores) / len(scores), 2) if scores else None,
        "csat_share_4_5": round(sum(1 for s in scores if s >= 4) / len(scores), 4) if scores else None,
    }


def _wait(call: Call) -> float:
    assert call.answered_at is not None and call.queued_at is not None
    return (call.answered_at - call.queued_at).total_seconds()


def _repeated(db: Session, call: Call) -> bool:
    if call.customer_id is None:
        return False
    later = db.scalar(
        select(Call.id)
        .where(
            Call.customer_id == call.customer_id,
            Call.reason == call.reason,
            Call.id != call.id,
            Call.arrived_at > call.arrived_at,
            Call.arrived_at <= call.arrived_at + timedelta(days=7),
        )
        .limit(1)
    )
    return later is not None


def staffing_advice(db: Session, queue: Queue, now: datetime, staffed_agents: int) -> dict[str, Any]:
    """Erlang C agents needed now for the queue's target, from the last 30 minutes' arrivals and AHT."""
    calls = _period_calls(db, queue.id, now - STAFFING_WINDOW, now)
    rate = len(calls) / STAFFING_WINDOW.total_seconds()
    handled = [
        (s.ended_at - s.started_at).total_seconds()
        for s in db.scalars(
            select(CallSegment).where(
                CallSegment.queue_id == queue.id,
                CallSegment.started_at.is_not(None),
                CallSegment.ended_at.is_not(None),
                CallSegment.ended_at >= now - timedelta(hours=2),
            )
        )
        if s.ended_at and s.started_at
    ]
    aht = sum(handled) / len(handled) if handled else DEFAULT_AHT_SECONDS
    target = queue.sl_target_percent / 100.0
    needed = agents_for_service_level(rate, aht, target, float(queue.sl_target_seconds)) if rate > 0 else 0
    return {
        "arrivals_per_hour": round(rate * 3600, 1),
        "aht_seconds": round(aht, 1),
        "aht_measured": bool(handled),
        "agents_needed": needed,
        "target": f"{queue.sl_target_percent}/{queue.sl_target_seconds}",
        "method": "erlang_c",
    }


def intraday_intervals(
    db: Session, start: datetime, end: datetime, minutes: int = 15
) -> list[dict[str, Any]]:
    step = timedelta(minutes=minutes)
    calls = _period_calls(db, None, start, end)
    out = []
    t = start
    while t < end:
        chunk = [c for c in calls if c.queued_at is not None and t <= c.queued_at < t + step]
        answered = [c for c in chunk if c.answered_at is not None]
        within = len([c for c in answered if _wait(c) <= 20])
        out.append(
            {
                "start": t.isoformat(),
                "offered": len(chunk),
                "answered": len(answered),
                "service_level": round(within / len(chunk), 4) if chunk else None,
            }
        )
        t += step
    return out
