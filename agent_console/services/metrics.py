"""The console's one seam to the metric definitions (routing.reports) and staffing (routing.erlang).

It loads the calls of a period from the database, turns them into ``routing.reports.CallOutcome``
rows and lets ``routing.reports.compute_metrics`` compute SL, ASA, abandonment, transfer rate,
FCR and CSAT, so a number on the wallboard means what it means in the simulator and the CLI.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from callcentre.db.models import Call, CallSegment, Queue, SurveyResponse
from routing.erlang import agents_for_service_level
from routing.reports import CallOutcome, compute_metrics

DEFAULT_AHT_SECONDS = 180.0
STAFFING_WINDOW = timedelta(minutes=30)
MIN_RATE_SPAN = timedelta(minutes=2)


def _period_calls(db: Session, queue_id: int | None, start: datetime, end: datetime) -> list[Call]:
    stmt = select(Call).where(Call.queued_at.is_not(None), Call.queued_at >= start, Call.queued_at < end)
    if queue_id is not None:
        stmt = stmt.where(Call.queue_id == queue_id)
    return list(db.scalars(stmt))


def queue_metrics(db: Session, queue: Queue | None, start: datetime, end: datetime) -> dict[str, Any]:
    """Figures for calls queued in ``[start, end)`` (all queues when ``queue`` is None)."""
    calls = _period_calls(db, queue.id if queue else None, start, end)
    threshold = float(queue.sl_target_seconds) if queue else 20.0
    m = compute_metrics(outcomes(db, calls), threshold=threshold)
    return {
        "offered": m.offered,
        "answered": m.answered,
        "abandoned": m.abandoned,
        "service_level": _round(m.sl, 4),
        "asa_seconds": _round(m.asa, 1),
        "abandonment": _round(m.abandonment, 4),
        "transfer_rate": _round(m.transfer_rate, 4),
        "fcr": _round(m.fcr, 4),
        "csat_mean": _round(m.csat_mean, 2),
        "csat_share_4_5": _round(m.csat_top2, 4),
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def outcomes(db: Session, calls: list[Call]) -> list[CallOutcome]:
    """The database's calls as ``routing.reports.CallOutcome`` rows (the shared definitions)."""
    ids = [c.id for c in calls]
    agents: dict[str, list[str]] = {}
    surveys: dict[str, SurveyResponse] = {}
    if ids:
        for call_id, agent_id in db.execute(
            select(CallSegment.call_id, CallSegment.agent_id)
            .where(CallSegment.call_id.in_(ids), CallSegment.started_at.is_not(None))
            .order_by(CallSegment.id)
        ).tuples():
            seen = agents.setdefault(call_id, [])
            if agent_id is not None and str(agent_id) not in seen:
                seen.append(str(agent_id))
        for survey in db.scalars(select(SurveyResponse).where(SurveyResponse.call_id.in_(ids))):
            surveys[survey.call_id] = survey
    queue_names = dict(db.execute(select(Queue.id, Queue.name)).tuples().all())
    out = []
    for c in calls:
        assert c.queued_at is not None
        abandoned = c.answered_at is None and c.ended_at is not None and c.outcome in ("abandoned", "")
        found = surveys.get(c.id)
        who = tuple(agents.get(c.id, ()))
        out.append(
            CallOutcome(
                call_id=c.id,
                queue=queue_names.get(c.queue_id or 0, ""),
                offered_at=c.queued_at.timestamp(),
                answered_at=c.answered_at.timestamp() if c.answered_at else None,
                abandoned_at=c.ended_at.timestamp() if abandoned and c.ended_at else None,
                agents=who,
                # The caller's own "not solved" in the survey outweighs the agent's disposition.
                resolved_first=bool(c.resolved) and len(who) <= 1 and not (found is not None and found.solved is False),
                repeat_within_7d=_repeated(db, c) if c.resolved else False,
                survey_offered=found is not None,
                csat=found.score if found is not None and found.completed else None,
            )
        )
    return out


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
    """Erlang C agents needed now for the queue's target, from recent arrivals and measured AHT.

    The arrival rate is the calls of the last 30 minutes over the time they actually span (at least
    ``MIN_RATE_SPAN``), so a centre that opened ten minutes ago is not told it is quiet.
    """
    calls = _period_calls(db, queue.id, now - STAFFING_WINDOW, now)
    first = min((c.queued_at for c in calls if c.queued_at is not None), default=now)
    span = max((now - first).total_seconds(), MIN_RATE_SPAN.total_seconds())
    rate = len(calls) / span
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
    aht = max(sum(handled) / len(handled), 1.0) if handled else DEFAULT_AHT_SECONDS
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


def intraday_intervals(db: Session, start: datetime, end: datetime, minutes: int = 15) -> list[dict[str, Any]]:
    """Offered, answered and SL20 per interval (all queues), each from ``compute_metrics``."""
    step = timedelta(minutes=minutes)
    rows = outcomes(db, _period_calls(db, None, start, end))
    out = []
    t = start
    while t < end:
        lo, hi = t.timestamp(), (t + step).timestamp()
        m = compute_metrics([r for r in rows if lo <= r.offered_at < hi])
        out.append(
            {"start": t.isoformat(), "offered": m.offered, "answered": m.answered, "service_level": _round(m.sl, 4)}
        )
        t += step
    return out
