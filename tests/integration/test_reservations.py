"""Reservation rules on a real database (SQLite file and the real PostgreSQL server):
timeouts give the call back its ORIGINAL place, M misses in a row set the agent Not Ready,
a callback keeps its place, the UNIQUE safety net holds even when states are corrupted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from callcentre.db.models import Agent, Call, CallSegment, QueueEntry, Reservation
from routing import reservations as rsv

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
POLICY = rsv.ReservationPolicy(ring_seconds=15, max_consecutive_misses=3)


def _agents(session: Session, n: int) -> list[int]:
    rows = [Agent(login=f"a{i}", name=f"A{i}", password_hash="-", state="available") for i in range(n)]
    session.add_all(rows)
    session.flush()
    return [a.id for a in rows]


def _queue(session: Session, n: int, queue: str = "general") -> list[str]:
    ids = [f"call-{queue}-{i}" for i in range(n)]
    for i, call_id in enumerate(ids):
        session.add(Call(id=call_id, state="queued"))
        session.flush()
        rsv.enqueue(session, call_id, queue, now=T0 + timedelta(seconds=i))
    return ids


def _places(session: Session, queue: str = "general") -> list[str]:
    return [e.call_id for e in rsv.waiting_entries(session, queue)]


def test_timeout_returns_call_to_its_original_place(db_sessions: sessionmaker[Session]) -> None:
    with db_sessions() as s:
        (agent,) = _agents(s, 1)
        calls = _queue(s, 4)
        s.commit()
        assert [rsv.position(s, c) for c in calls] == [1, 2, 3, 4]
        offer = rsv.reserve(s, calls[1], agent, now=T0 + timedelta(seconds=10), policy=POLICY)
        s.commit()
        assert offer is not None and offer.expires_at == T0 + timedelta(seconds=25)
        assert _places(s) == [calls[0], calls[2], calls[3]]
        assert rsv.position(s, calls[1]) == 0
        assert rsv.position(s, calls[2]) == 2
        assert s.get(Call, calls[1]).state == "offering"  # type: ignore[union-attr]
        # Not yet due: nothing happens.
        assert rsv.expire_overdue(s, now=T0 + timedelta(seconds=24), policy=POLICY) == []
        # A later caller arrives meanwhile; the timed-out call must still go back ahead of it.
        s.add(Call(id="call-late", state="queued"))
        s.flush()
        rsv.enqueue(s, "call-late", "general", now=T0 + timedelta(seconds=20))
        misses = rsv.expire_overdue(s, now=T0 + timedelta(seconds=25), policy=POLICY)
        s.commit()
        assert [(m.call_id, m.agent_id, m.reason, m.consecutive_misses) for m in misses] == [
            (calls[1], agent, "timeout", 1)
        ]
        assert _places(s) == [calls[0], calls[1], calls[2], calls[3], "call-late"]
        assert rsv.position(s, calls[1]) == 2
        assert s.get(Call, calls[1]).state == "queued"  # type: ignore[union-attr]
        assert s.get(Agent, agent).state == "available"  # type: ignore[union-attr]
        entry = s.scalars(select(QueueEntry).where(QueueEntry.call_id == calls[1])).one()
        assert entry.enqueued_at == T0 + timedelta(seconds=1) and entry.offers == 1
        # The same timeout handled twice (a second router process) changes nothing.
        assert rsv.expire_overdue(s, now=T0 + timedelta(seconds=30), policy=POLICY) == []
        assert rsv.missed(s, calls[1], agent, now=T0 + timedelta(seconds=30), policy=POLICY) is None


def test_m_misses_in_a_row_set_agent_not_ready_and_an_answer_resets(
    db_sessions: sessionmaker[Session],
) -> None:
    with db_sessions() as s:
        agent, other = _agents(s, 2)
        calls = _queue(s, 6)
        s.commit()
        t = T0 + timedelta(seconds=60)
        # miss, miss, answer, miss, miss, miss → Not Ready only after the last one.
        script = ["miss", "miss", "answer", "miss", "miss", "miss"]
        states = []
        for i, step in enumerate(script):
            assert rsv.reserve(s, calls[i], agent, now=t, policy=POLICY) is not None
            t += timedelta(seconds=5)
            if step == "answer":
                assert rsv.answered(s, calls[i], agent, now=t) is not None
                s.execute(update(Agent).where(Agent.id == agent).values(state="available"))
                states.append("answered")
            else:
                miss = rsv.missed(s, calls[i], agent, now=t, policy=POLICY)
                assert miss is not None
                states.append(f"{miss.consecutive_misses}:{miss.agent_state.value}")
            s.commit()
        assert states == [
            "1:available",
            "2:available",
            "answered",
            "1:available",
            "2:available",
            "3:not_ready",
        ]
        a = s.get(Agent, agent)
        assert a is not None and a.state == "not_ready" and a.state_reason == rsv.NOT_READY_REASON
        # Not Ready means no more offers; the streak restarts when they come back.
        assert rsv.reserve(s, calls[3], agent, now=t, policy=POLICY) is None
        assert rsv.consecutive_misses(s, agent) == 0
        assert s.get(Agent, other).state == "available"  # type: ignore[union-attr]


def test_answer_opens_a_segment_and_late_answer_is_refused(db_sessions: sessionmaker[Session]) -> None:
    with db_sessions() as s:
        a1, a2 = _agents(s, 2)
        c1, c2 = _queue(s, 2)
        s.commit()
        rsv.reserve(s, c1, a1, now=T0, policy=POLICY, why={"summary": "best resolver"})
        segment = rsv.answered(s, c1, a1, now=T0 + timedelta(seconds=4))
        s.commit()
        assert segment is not None and segment.agent_id == a1
        assert segment.offered_at == T0 and segment.started_at == T0 + timedelta(seconds=4)
        call = s.get(Call, c1)
        assert call is not None and call.state == "connected" and call.route_why == {"summary": "best resolver"}
        assert call.answered_at == T0 + timedelta(seconds=4)
        assert s.get(Agent, a1).state == "on_call"  # type: ignore[union-attr]
        assert rsv.position(s, c1) is None
        # a2's offer times out; a2 answering afterwards gets nothing (the call is back in the queue).
        rsv.reserve(s, c2, a2, now=T0, policy=POLICY)
        rsv.expire_overdue(s, now=T0 + timedelta(seconds=16), policy=POLICY)
        assert rsv.answered(s, c2, a2, now=T0 + timedelta(seconds=17)) is None
        s.commit()
        assert rsv.position(s, c2) == 1
        assert s.scalars(select(CallSegment).where(CallSegment.call_id == c2)).all() == []


def test_callback_keeps_place_and_survives_hangup(db_sessions: sessionmaker[Session]) -> None:
    with db_sessions() as s:
        (agent,) = _agents(s, 1)
        calls = _queue(s, 3)
        s.commit()
        assert rsv.request_callback(s, calls[1], "   ", now=T0) is False
        assert rsv.request_callback(s, calls[1], "+15550001", now=T0 + timedelta(seconds=30))
        cancelled = rsv.cancel_call(s, calls[1], now=T0 + timedelta(seconds=31))  # caller hangs up
        s.execute(update(Call).where(Call.id == calls[1]).values(state="ended"))
        cancelled_other = rsv.cancel_call(s, calls[2], now=T0 + timedelta(seconds=31))  # plain abandon
        s.commit()
        assert cancelled.kept_for_callback and not cancelled_other.kept_for_callback
        assert _places(s) == [calls[0], calls[1]]
        assert rsv.position(s, calls[1]) == 2
        # First in line is served; then the callback's turn comes: the offer says whom to dial.
        assert rsv.reserve(s, calls[0], agent, now=T0 + timedelta(seconds=40), policy=POLICY) is not None
        rsv.answered(s, calls[0], agent, now=T0 + timedelta(seconds=41))
        s.execute(update(Agent).where(Agent.id == agent).values(state="available"))
        offer = rsv.reserve(s, calls[1], agent, now=T0 + timedelta(seconds=50), policy=POLICY)
        s.commit()
        assert offer is not None and offer.callback_number == "+15550001"
        assert s.get(Call, calls[1]).state == "ended"  # type: ignore[union-attr]  # no illegal move
        res = s.scalars(select(Reservation).where(Reservation.call_id == calls[1])).one()
        assert res.callback
        assert rsv.answered(s, calls[1], agent, now=T0 + timedelta(seconds=55)) is not None
        s.commit()
        assert s.get(Call, calls[1]).outcome == "callback"  # type: ignore[union-attr]


def test_callback_refused_while_agent_ringing(db_sessions: sessionmaker[Session]) -> None:
    with db_sessions() as s:
        (agent,) = _agents(s, 1)
        (call,) = _queue(s, 1)
        rsv.reserve(s, call, agent, now=T0, policy=POLICY)
        assert rsv.request_callback(s, call, "+15550001", now=T0) is False
        cancelled = rsv.cancel_call(s, call, now=T0 + timedelta(seconds=2))
        s.commit()
        assert cancelled.agent_id == agent and not cancelled.kept_for_callback
        assert s.get(Agent, agent).state == "available"  # type: ignore[union-attr]
        assert rsv.consecutive_misses(s, agent) == 0  # the caller left: not the agent's miss


def test_unique_safety_net_holds_when_states_are_corrupted(db_sessions: sessionmaker[Session]) -> None:
    """Someone sets a ringing agent back to 'available' by hand: the next reserve still cannot create
    a second live reservation for that agent."""
    with db_sessions() as s:
        (agent,) = _agents(s, 1)
        c1, c2 = _queue(s, 2)
        assert rsv.reserve(s, c1, agent, now=T0, policy=POLICY) is not None
        s.commit()
        s.execute(update(Agent).where(Agent.id == agent).values(state="available"))
        s.commit()
        with pytest.raises(IntegrityError):
            rsv.reserve(s, c2, agent, now=T0, policy=POLICY)
        s.rollback()
        assert rsv.double_assignments(s) == (0, 0)
        assert _places(s) == [c2]


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="ring_seconds"):
        rsv.ReservationPolicy(ring_seconds=0)
    with pytest.raises(ValueError, match="max_consecutive_misses"):
        rsv.ReservationPolicy(max_consecutive_misses=0)


def test_reserve_many_decides_each_pair_on_its_own(db_sessions: sessionmaker[Session]) -> None:
    """One transaction, several pairs: a pair that collides with an earlier one in the same round loses
    alone; the others win."""
    with db_sessions() as s:
        a1, a2 = _agents(s, 2)
        c1, c2, c3 = _queue(s, 3)
        s.commit()
        offers = rsv.reserve_many(s, [(c1, a1, None), (c2, a1, None), (c3, a2, {"x": 1})], now=T0, policy=POLICY)
        s.commit()
        assert [o.agent_id if o else None for o in offers] == [a1, None, a2]
        assert _places(s) == [c2]
        assert rsv.double_assignments(s) == (0, 0)


def test_malformed_skills_do_not_keep_a_caller_out(db_sessions: sessionmaker[Session]) -> None:
    with db_sessions() as s:
        s.add(Call(id="call-odd", state="queued"))
        s.flush()
        entry = rsv.enqueue(s, "call-odd", "general", now=T0, required_skills=[("billing", "x"), ("tech", 2), "?"])
        s.commit()
        assert entry.required_skills == [["tech", 2]]
        assert rsv.position(s, "call-odd") == 1
