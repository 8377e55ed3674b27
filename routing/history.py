"""First-contact outcomes from the calls table, for the router's resolution model.

One triple per answered call in the window: ``(first agent, reason, resolved on first contact)``,
where resolved means what FCR means in docs/metrics.md — the first agent marked it resolved, it was
not transferred (one answered leg, no transfer row), and the same customer did not call again for
the same reason within 7 days. Calls whose 7 days are not over yet count only if they already failed
(a transfer, unresolved, or a repeat has happened): success is not known early.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from callcentre.db.models import Call, CallSegment, TransferRecord
from routing.resolution import ResolutionModel

REPEAT_WINDOW = timedelta(days=7)


def first_contact_outcomes(
    session: Session, *, now: datetime, since: timedelta = timedelta(days=90)
) -> list[tuple[str, str, bool]]:
    start = now - since
    calls = session.execute(
        select(Call.id, Call.customer_id, Call.reason, Call.resolved, Call.answered_at)
        .where(Call.answered_at.is_not(None), Call.answered_at >= start, Call.reason != "")
        .order_by(Call.answered_at)
    ).all()
    if not calls:
        return []
    ids = [c.id for c in calls]
    first_agent: dict[str, int] = {}
    legs: dict[str, int] = defaultdict(int)
    for call_id, agent_id in session.execute(
        select(CallSegment.call_id, CallSegment.agent_id)
        .where(CallSegment.call_id.in_(ids), CallSegment.started_at.is_not(None))
        .order_by(CallSegment.started_at, CallSegment.id)
    ):
        if agent_id is not None:
            first_agent.setdefault(call_id, agent_id)
            legs[call_id] += 1
    transferred = set(
        session.scalars(
            select(TransferRecord.call_id).where(
                TransferRecord.call_id.in_(ids), TransferRecord.status.in_(("requested", "completed"))
            )
        )
    )
    # Later calls of each (customer, reason), to spot repeats within the window.
    arrivals: dict[tuple[int, str], list[datetime]] = defaultdict(list)
    for customer_id, reason, arrived in session.execute(
        select(Call.customer_id, Call.reason, Call.arrived_at).where(
            Call.customer_id.is_not(None), Call.arrived_at >= start
        )
    ):
        arrivals[(customer_id, reason)].append(arrived)
    out: list[tuple[str, str, bool]] = []
    for c in calls:
        agent = first_agent.get(c.id)
        if agent is None:
            continue
        repeat = c.customer_id is not None and any(
            c.answered_at < t <= c.answered_at + REPEAT_WINDOW for t in arrivals[(c.customer_id, c.reason)]
        )
        failed = c.resolved is False or legs[c.id] > 1 or c.id in transferred or repeat
        if failed:
            out.append((str(agent), c.reason, False))
        elif c.resolved and now - c.answered_at >= REPEAT_WINDOW:
            out.append((str(agent), c.reason, True))
    return out


def resolution_model(session: Session, *, now: datetime) -> ResolutionModel:
    return ResolutionModel.from_outcomes(first_contact_outcomes(session, now=now))
