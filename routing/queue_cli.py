"""``callcentre queues``: what operators check when callers complain about waiting.

Waiting calls per queue (with callbacks holding a place: due now, waiting for a retry after the
customer did not answer, not dialled because the backend cannot, given up today), live reservations (who is ringing for
which call, until when), agents on a miss streak or set Not Ready for missed offers, transfers by
reason. Ids and counts only: no caller numbers or names are printed.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from callcentre.db.base import utcnow
from callcentre.db.models import Agent, AgentOfferStreak, QueueEntry, Reservation
from routing import reservations, transfers
from routing.callbacks import callback_counts


def queue_status(session: Session, now: datetime) -> dict[str, Any]:
    """Plain data for the table and ``--json``."""
    queues: dict[str, dict[str, Any]] = {}
    for entry in reservations.waiting_entries(session):
        q = queues.setdefault(entry.queue, {"waiting": 0, "callbacks": 0, "longest_wait_s": 0.0})
        q["waiting"] += 1
        q["callbacks"] += entry.callback_number is not None
        q["longest_wait_s"] = max(q["longest_wait_s"], round((now - entry.enqueued_at).total_seconds(), 1))
    offered = Counter(session.scalars(select(QueueEntry.queue).where(QueueEntry.status == "offered")))
    for name, count in offered.items():
        queues.setdefault(name, {"waiting": 0, "callbacks": 0, "longest_wait_s": 0.0})["ringing"] = count
    live = [
        {
            "call_id": r.call_id,
            "agent_id": r.agent_id,
            "expires_in_s": round((r.expires_at - now).total_seconds(), 1),
            "callback": r.callback,
            "owner": r.owner,
        }
        for r in session.scalars(select(Reservation).where(Reservation.status == "active").order_by(Reservation.id))
    ]
    streaks = [
        {"agent_id": agent_id, "consecutive_misses": misses, "total_misses": total, "state": state}
        for agent_id, misses, total, state in session.execute(
            select(
                AgentOfferStreak.agent_id,
                AgentOfferStreak.consecutive_misses,
                AgentOfferStreak.total_misses,
                Agent.state,
            )
            .join(Agent, Agent.id == AgentOfferStreak.agent_id)
            .where(AgentOfferStreak.total_misses > 0)
            .order_by(AgentOfferStreak.agent_id)
        )
    ]
    not_ready = list(
        session.scalars(
            select(Agent.id).where(Agent.state == "not_ready", Agent.state_reason == reservations.NOT_READY_REASON)
        )
    )
    counts = transfers.transfer_counts(session)
    return {
        "queues": queues,
        "callbacks": callback_counts(session, now, now.replace(hour=0, minute=0, second=0, microsecond=0)),
        "reservations": live,
        "miss_streaks": streaks,
        "not_ready_for_missed_offers": not_ready,
        "transfers": [{"kind": k, "reason": r, "count": n} for (k, r), n in sorted(counts.items())],
    }


def _settings(ctx: click.Context) -> Any:
    obj: Any = ctx.find_root().obj
    found = getattr(obj, "settings", None)
    if found is None:
        from callcentre.settings import load_settings

        found = load_settings()
    return found


@click.group("queues")
def queues_group() -> None:
    """Queue places, reservations, miss streaks and transfers."""


@queues_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_context
def status_command(ctx: click.Context, as_json: bool) -> None:
    """Waiting calls per queue, live reservations, agents missing offers, transfers by reason."""
    from callcentre.db.migrate import upgrade
    from callcentre.db.session import make_engine

    engine = make_engine(_settings(ctx).database.url)
    try:
        upgrade(engine)
        with Session(engine) as session:
            data = queue_status(session, utcnow())
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{'queue':<16}{'waiting':>8}{'callbacks':>10}{'ringing':>8}{'longest wait':>14}")
    for name, q in sorted(data["queues"].items()):
        click.echo(
            f"{name:<16}{q['waiting']:>8}{q['callbacks']:>10}{q.get('ringing', 0):>8}{q['longest_wait_s']:>13.0f}s"
        )
    if data["callbacks"]:
        click.echo(
            f"\n{'callbacks':<16}{'due':>6}{'retry later':>13}{'dialling':>10}{'not dialled':>13}{'given up today':>16}"
        )
        for name, c in sorted(data["callbacks"].items()):
            click.echo(
                f"{name:<16}{c['waiting']:>6}{c['retry_pending']:>13}{c['in_progress']:>10}"
                f"{c['not_dialled']:>13}{c['given_up']:>16}"
            )
    click.echo(f"\nlive reservations: {len(data['reservations'])}")
    for r in data["reservations"]:
        click.echo(
            f"  {r['call_id']} → agent {r['agent_id']} (expires in {r['expires_in_s']:.0f}s"
            f"{', callback' if r['callback'] else ''})"
        )
    if data["miss_streaks"]:
        click.echo("\nmissed offers:")
        for s in data["miss_streaks"]:
            click.echo(
                f"  agent {s['agent_id']}: {s['consecutive_misses']} in a row, {s['total_misses']} total ({s['state']})"
            )
    if data["transfers"]:
        click.echo("\ntransfers:")
        for t in data["transfers"]:
            click.echo(f"  {t['kind']:<6} {t['reason']:<32} {t['count']}")
