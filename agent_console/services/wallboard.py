"""Wallboard snapshot: queues (live waiting + metrics), agents and their time in state, intraday
series, staffing advice, alerts, and callbacks per queue (due now, waiting for a retry after the
customer did not answer, not dialled because the backend cannot, given up today). Metric *definitions*
live in ``routing.reports`` (via ``agent_console.services.metrics``); this module only gathers rows and
shapes them for the page.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent_console.services import metrics
from callcentre.db.base import utcnow
from callcentre.db.models import Agent, Call, CallSegment, Queue
from callcentre.db.models.satisfaction import SupervisorAlert
from callcentre.domain.call_state import CallState
from routing.callbacks import callback_counts

WAITING_STATES = (CallState.QUEUED.value, CallState.OFFERING.value)
DEFAULT_AHT_SECONDS = 180.0


def start_of_day(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def agents_view(db: Session, now: datetime) -> list[dict[str, Any]]:
    out = []
    agents = list(db.scalars(select(Agent).where(Agent.active.is_(True)).order_by(Agent.login)))
    current: dict[int, str] = {}
    for seg in db.scalars(select(CallSegment).where(CallSegment.ended_at.is_(None))):
        if seg.agent_id is not None:
            current[seg.agent_id] = seg.call_id
    for a in agents:
        if a.role != "agent":
            continue
        out.append(
            {
                "id": a.id,
                "login": a.login,
                "name": a.name,
                "state": a.state,
                "reason": a.state_reason,
                "since": a.state_since.isoformat(),
                "seconds_in_state": max(0, int((now - a.state_since).total_seconds())),
                "call_id": current.get(a.id, ""),
                "skills": [s.skill.name for s in a.skills],
            }
        )
    return out


def snapshot(db: Session, now: datetime | None = None, capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
    now = now or utcnow()
    day = start_of_day(now)
    queues = list(db.scalars(select(Queue).order_by(Queue.name)))
    waiting_rows = list(
        db.execute(
            select(Call.queue_id, Call.queued_at, Call.arrived_at).where(Call.state.in_(WAITING_STATES))
        ).tuples()
    )
    agents = agents_view(db, now)
    staffed = sum(1 for a in agents if a["state"] not in ("logged_out",))
    callbacks = callback_counts(db, now, day)
    no_callbacks = {"waiting": 0, "retry_pending": 0, "not_dialled": 0, "in_progress": 0, "given_up": 0}
    out_queues = []
    for q in queues:
        waits = [(now - (queued or arrived)).total_seconds() for qid, queued, arrived in waiting_rows if qid == q.id]
        today = metrics.queue_metrics(db, q, day, now)
        recent = metrics.queue_metrics(db, q, now - timedelta(minutes=30), now)
        figures = {
            "offered": today["offered"],
            "answered": today["answered"],
            "abandoned": today["abandoned"],
            "sl_today": today["service_level"],
            "sl_30min": recent["service_level"],
            "asa_seconds": today["asa_seconds"],
            "abandonment": today["abandonment"],
            "transfer_rate": today["transfer_rate"],
            "fcr": today["fcr"],
            "csat_mean": today["csat_mean"],
            "csat_share_4_5": today["csat_share_4_5"],
        }
        out_queues.append(
            {
                "id": q.id,
                "name": q.name,
                "waiting": len(waits),
                "longest_wait_seconds": round(max(waits), 1) if waits else 0.0,
                "sl_target_seconds": q.sl_target_seconds,
                "sl_target_percent": q.sl_target_percent,
                "metrics": figures,
                "staffing": metrics.staffing_advice(db, q, now, staffed_agents=staffed),
                "callbacks": callbacks.get(q.name, no_callbacks),
            }
        )
    survey_alerts = [
        {
            "id": a.id,
            "call_id": a.call_id,
            "score": a.detail.get("score"),
            "queue": "",
            "created_at": a.created_at.isoformat(),
        }
        for a in db.scalars(
            select(SupervisorAlert)
            .where(
                SupervisorAlert.acknowledged_at.is_(None),
                SupervisorAlert.kind == "low_satisfaction",
                SupervisorAlert.created_at >= day,
            )
            .order_by(SupervisorAlert.id.desc())
            .limit(20)
        )
    ]
    return {
        "at": now.isoformat(),
        "queues": out_queues,
        "agents": agents,
        "agent_states": _count_states(agents),
        "survey_alerts": survey_alerts,
        "capabilities": capabilities or {},
    }


def _count_states(agents: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for a in agents:
        counts[a["state"]] = counts.get(a["state"], 0) + 1
    return counts


def intraday(db: Session, now: datetime | None = None) -> dict[str, Any]:
    """Offered/answered per 15 minutes today and the service level of each interval, all queues."""
    now = now or utcnow()
    return {
        "at": now.isoformat(),
        "interval_minutes": 15,
        "intervals": metrics.intraday_intervals(db, start_of_day(now), now, minutes=15),
    }
