"""Several real router PROCESSES reserving at once never double-assign — on SQLite and on a real
PostgreSQL server (started by the fixture in conftest.py)."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from callcentre.db.models import Agent, QueueEntry, Reservation
from routing import reservations
from tests.integration.reservation_workers import run_race, seed

pytestmark = [pytest.mark.slow]


def test_one_round_every_agent_gets_exactly_one_call(db_url: str, db_sessions: sessionmaker[Session]) -> None:
    """160 waiting calls, 60 agents, 4 processes grabbing random pairs: exactly 60 offers are won, by
    60 different agents for 60 different calls, and the database agrees with what the processes saw.
    Every process snapshots before the start barrier and goes for the same pairs, so they collide on
    every pair whatever the scheduler does."""
    agent_ids, _calls = seed(db_url, agents=60, calls=160)
    results = run_race(db_url, processes=4, max_seconds=60, contend=True)
    won = [offer for r in results for offer in r.offers]
    assert sum(r.errors for r in results) == 0
    assert len(won) == 60
    assert Counter(a for _c, a in won).most_common(1)[0][1] == 1
    assert Counter(c for c, _a in won).most_common(1)[0][1] == 1
    # The first 20 pairs were tried by all four processes: at least 3 × 20 lost races.
    assert sum(r.conflicts for r in results) >= 60, "the processes never collided: the test proves nothing"
    with db_sessions() as session:
        assert reservations.double_assignments(session) == (0, 0)
        live = set(
            session.execute(
                select(Reservation.call_id, Reservation.agent_id).where(Reservation.status == "active")
            ).tuples()
        )
        assert live == set(won)
        ringing = set(session.scalars(select(Agent.id).where(Agent.state == "ringing")))
        assert ringing == set(agent_ids)
        offered = session.scalar(select(func.count()).select_from(QueueEntry).where(QueueEntry.status == "offered"))
        assert offered == 60


def test_many_cycles_each_call_answered_once(db_url: str, db_sessions: sessionmaker[Session]) -> None:
    """4 processes run offer → answer → agent free again until 120 calls are served by 6 agents:
    every call is answered by exactly one agent, no reservation is left live."""
    seed(db_url, agents=6, calls=120)
    results = run_race(db_url, processes=4, cycle=True, max_seconds=90)
    won = [offer for r in results for offer in r.offers]
    assert sum(r.errors for r in results) == 0
    assert len(won) == 120
    assert len({c for c, _a in won}) == 120
    with db_sessions() as session:
        assert reservations.double_assignments(session) == (0, 0)
        per_call = Counter(session.scalars(select(Reservation.call_id).where(Reservation.status == "answered")))
        assert len(per_call) == 120 and set(per_call.values()) == {1}
        assert session.scalar(select(func.count()).select_from(Reservation).where(Reservation.status == "active")) == 0


def test_naive_read_then_write_does_double_assign_on_sqlite(tmp_path: object) -> None:
    """The baseline the benchmark compares with, shown to really race: without the conditional
    UPDATEs, processes that read 'available' at the same time all win the same agent."""
    from callcentre.db.migrate import upgrade
    from callcentre.db.session import make_engine

    url = f"sqlite:///{tmp_path}/naive.db"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    seed(url, agents=30, calls=300)
    results = run_race(url, processes=4, mode="naive", max_seconds=60, contend=True)
    won = [offer for r in results for offer in r.offers]
    per_agent = Counter(a for _c, a in won)
    assert max(per_agent.values()) > 1, "the naive baseline should double-assign when processes contend"
