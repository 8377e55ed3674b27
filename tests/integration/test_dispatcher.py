"""The dispatcher on the real event bus, the in-process telephony backend and a real SQLite database:
router → reservation → ring; answer; no-answer and timeout give the call back its ORIGINAL place;
M misses → Not Ready; a freed agent gets the longest-waiting call; callback keeps the place;
abandonment; transfers through the dispatcher."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from callcentre.bus import EventBus
from callcentre.db.models import Agent, AgentSkill, Call, CallSegment, Queue, QueueEntry, Skill
from callcentre.domain.events import (
    AgentStateChanged,
    CallbackRequested,
    CallEnded,
    CallOffered,
    CallQueued,
    CallTransferred,
)
from ivr.actions import Gather, Hangup
from routing import queue_experience as qx
from routing import reservations as rsv
from routing import transfers as tr
from routing.dispatcher import CallbackDue, Dispatcher, DispatcherConfig, wait_estimate_summary
from telephony.memory import MemoryBackend


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Platform:
    """Real bus + memory backend + dispatcher; records every event published."""

    def __init__(self, sessions: sessionmaker[Session], config: DispatcherConfig) -> None:
        self.sessions = sessions
        self.clock = Clock()
        self.bus = EventBus()
        self.backend = MemoryBackend()
        self.backend.start(self.bus)
        self.events: list[Any] = []
        self.bus.subscribe(object, self.events.append)
        self.dispatcher = Dispatcher(self.bus, self.backend, sessions, config=config, clock=self.clock).subscribe()

    def arrive(
        self, caller: str = "+15550000", queue: str = "billing", skills: tuple[tuple[str, int], ...] = (("billing", 2),)
    ) -> str:
        """A caller reaches the queue (what the IVR service does after Enqueue)."""
        call_id = self.backend.place_call(caller)
        with self.sessions() as s:
            s.add(Call(id=call_id, state="queued", caller_id=caller, reason=queue, queued_at=self.clock()))
            s.commit()
        self.bus.publish(CallQueued(call_id, queue=queue, required_skills=skills, priority=0, language="en"))
        return call_id

    def ringing(self, call_id: str) -> int | None:
        agent = self.backend.calls[call_id].ringing_agent
        return agent.agent_id if agent else None

    def agent(self, agent_id: int) -> Agent:
        with self.sessions() as s:
            found = s.get(Agent, agent_id)
            assert found is not None
            return found

    def free(self, agent_id: int) -> None:
        """The console's wrap-up done: agent available again, announced on the bus."""
        with self.sessions() as s:
            s.execute(update(Agent).where(Agent.id == agent_id).values(state="available", state_since=self.clock()))
            s.commit()
        self.bus.publish(AgentStateChanged(agent_id, "available"))

    def places(self, queue: str = "billing") -> list[str]:
        with self.sessions() as s:
            return [e.call_id for e in rsv.waiting_entries(s, queue)]

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def _seed(sessions: sessionmaker[Session], levels: list[int]) -> list[int]:
    """Agents with the given billing proficiency, all available; a billing queue."""
    with sessions() as s:
        billing = Skill(name="billing")
        s.add_all([billing, Queue(name="billing", required_skills=[{"skill": "billing", "min_level": 2}])])
        s.flush()
        ids = []
        for i, level in enumerate(levels):
            agent = Agent(
                login=f"d{i}",
                name=f"D{i}",
                password_hash="-",
                state="available",
                state_since=datetime(2026, 11, 23, 9, 0, i, tzinfo=UTC),
                sip_contact=f"sip:d{i}@127.0.0.1",
            )
            agent.skills.append(AgentSkill(skill_id=billing.id, proficiency=level))
            s.add(agent)
            s.flush()
            ids.append(agent.id)
        s.commit()
        return ids


@pytest.fixture
def platform(db_sessions: sessionmaker[Session]) -> Platform:
    """On a SQLite file and on the real PostgreSQL server (the dispatcher reserves a round per
    transaction on the first, one reservation per transaction on the second)."""
    config = DispatcherConfig(policy=rsv.ReservationPolicy(ring_seconds=15, max_consecutive_misses=2))
    return Platform(db_sessions, config)


def test_queued_call_rings_best_agent_and_answer_connects(platform: Platform) -> None:
    low, high = _seed(platform.sessions, [2, 5])
    call_id = platform.arrive()
    assert platform.ringing(call_id) == high
    offered = platform.of(CallOffered)
    assert [(o.call_id, o.agent_id) for o in offered] == [(call_id, high)] and offered[0].why
    assert platform.agent(high).state == "ringing" and platform.agent(low).state == "available"
    with platform.sessions() as s:
        call = s.get(Call, call_id)
        assert call is not None and call.state == "offering" and call.route_why["agent_id"] == high
        assert call.route_why["summary"]
    platform.clock.advance(4)
    platform.backend.agent_answers(call_id)
    assert platform.agent(high).state == "on_call"
    with platform.sessions() as s:
        segment = s.scalars(select(CallSegment).where(CallSegment.call_id == call_id)).one()
        assert segment.agent_id == high and segment.started_at == platform.clock.now
        assert s.get(Call, call_id).state == "connected"  # type: ignore[union-attr]
    # Caller hangs up: the leg closes, the agent wraps up, handle time feeds the live rates.
    platform.clock.advance(200)
    platform.backend.caller_hangs_up(call_id)
    assert platform.agent(high).state == "wrap_up"
    assert platform.dispatcher.window("billing").rates(platform.clock.now.timestamp()).aht == pytest.approx(200)
    assert [e.outcome for e in platform.of(CallEnded)] == ["completed"]


def test_no_answer_returns_call_to_original_place_and_m_misses_set_not_ready(platform: Platform) -> None:
    (only,) = _seed(platform.sessions, [4])
    first = platform.arrive("+15550001")
    platform.clock.advance(5)
    second = platform.arrive("+15550002")
    assert platform.ringing(first) == only
    assert platform.places() == [second]
    platform.clock.advance(3)
    platform.backend.agent_rejects(first)  # AgentNoAnswer
    # Back at the front, ahead of the later caller; the agent who let it ring is not offered it again
    # right away, so the next offer goes to the later call.
    assert platform.ringing(second) == only
    assert platform.places() == [first]
    platform.backend.agent_rejects(second)  # second miss in a row → Not Ready (M = 2)
    agent = platform.agent(only)
    assert agent.state == "not_ready" and agent.state_reason == rsv.NOT_READY_REASON
    assert platform.places() == [first, second]
    states = [(e.agent_id, e.state) for e in platform.of(AgentStateChanged)]
    assert states[-1] == (only, "not_ready")
    with platform.sessions() as s:
        legs = s.scalars(select(CallSegment).order_by(CallSegment.id)).all()
        assert [(leg.call_id, leg.end_reason) for leg in legs] == [(first, "no_answer"), (second, "no_answer")]


def test_timeout_by_tick_and_freed_agent_takes_longest_waiting(platform: Platform) -> None:
    a1, a2 = _seed(platform.sessions, [5, 3])
    c1 = platform.arrive()
    c2 = platform.arrive()
    assert platform.ringing(c1) == a1 and platform.ringing(c2) == a2
    platform.backend.agent_answers(c2)
    platform.clock.advance(16)  # a1 never answers and the backend never reports: the reservation expires
    platform.dispatcher.tick()
    assert platform.agent(a1).state == "available"
    with platform.sessions() as s:
        assert rsv.position(s, c1) == 1
    c3 = platform.arrive()  # arrives later; a1 is excluded for c1, so c3 rings a1
    assert platform.ringing(c3) == a1
    platform.backend.agent_answers(c3)
    platform.free(a2)  # a2 finishes wrap-up: gets c1, the longest waiting
    assert platform.ringing(c1) == a2


def test_callback_keeps_place_and_is_dialled_when_agent_reserved(platform: Platform) -> None:
    (agent,) = _seed(platform.sessions, [4])
    with platform.sessions() as s:
        s.execute(update(Agent).where(Agent.id == agent).values(state="on_call"))
        s.commit()
    window = platform.dispatcher.window("billing")
    for i in range(40):  # live history: 40 handled calls of 300 s
        window.handled(platform.clock.now.timestamp() - i, 300.0)
    callers = [platform.arrive(f"+1555010{i}") for i in range(4)]
    third = callers[2]
    assert platform.backend.performed.get(third) is None  # nothing said over the IVR's own prompt
    platform.clock.advance(59)
    platform.dispatcher.tick()
    assert platform.backend.performed.get(third) is None
    platform.clock.advance(1)
    platform.dispatcher.tick()
    announced = platform.backend.last_action(third)
    assert isinstance(announced, Gather) and "queue_callback_offer" in [p.id for p in announced.prompts]
    assert "num_3" in [p.id for p in announced.prompts]
    platform.backend.press(third, "1")
    assert isinstance(platform.backend.last_action(third), Hangup)
    assert platform.backend.calls[third].ended
    assert [(e.call_id, e.keep_place) for e in platform.of(CallbackRequested)] == [(third, True)]
    assert platform.places() == callers  # still third in line after hanging up
    platform.free(agent)
    platform.backend.agent_answers(callers[0])
    platform.backend.agent_hangs_up(callers[0])
    platform.free(agent)
    platform.backend.agent_answers(callers[1])
    platform.backend.agent_hangs_up(callers[1])
    platform.free(agent)
    # The memory backend dials (telephony.base.CallbackCapable): agent first, with the caller's number.
    dialled = platform.backend.callbacks
    assert [(d.call_id, d.agent.agent_id, d.number) for d in dialled] == [(third, agent, "+15550102")]
    assert platform.of(CallbackDue) == []
    assert platform.agent(agent).state == "ringing"


def test_caller_leaving_queue_is_abandoned_and_measured(platform: Platform) -> None:
    (agent,) = _seed(platform.sessions, [4])
    c1 = platform.arrive()
    c2 = platform.arrive()
    platform.clock.advance(30)
    platform.backend.caller_hangs_up(c2)
    platform.backend.caller_hangs_up(c1)  # hangs up while the agent rings: agent freed
    assert platform.agent(agent).state == "available"
    assert [e.outcome for e in platform.of(CallEnded)] == ["abandoned", "abandoned"]
    assert platform.places() == []
    rates = platform.dispatcher.window("billing").rates(platform.clock.now.timestamp())
    assert rates.patience == pytest.approx(30)
    assert wait_estimate_summary(platform.dispatcher)["windows"]["billing"]["patience"] == pytest.approx(30)


def test_after_hours_takes_a_callback_and_overflow_moves_queue(session_factory: sessionmaker[Session]) -> None:
    closed = qx.QueueRules("billing", hours=qx.OpeningHours(days=frozenset({6}), timezone="UTC"))  # Sundays
    platform = Platform(session_factory, DispatcherConfig(rules={"billing": closed}))
    _seed(platform.sessions, [4])
    call_id = platform.arrive("+15550999")
    action = platform.backend.last_action(call_id)
    assert isinstance(action, Hangup) and action.prompts[0].id == "queue_callback_ok"
    with platform.sessions() as s:
        entry = s.scalars(select(QueueEntry).where(QueueEntry.call_id == call_id)).one()
        assert entry.callback_number == "+15550999"
    overflow = qx.QueueRules("billing", overflow_queue="general", overflow_when_waiting=0)
    platform2 = Platform(session_factory, DispatcherConfig(rules={"billing": overflow}))
    moved = platform2.arrive("+15550998")
    assert platform2.places("general") == [moved]


def test_transfers_through_the_dispatcher(platform: Platform) -> None:
    a1, a2, a3 = _seed(platform.sessions, [5, 4, 3])
    call_id = platform.arrive()
    assert platform.ringing(call_id) == a1
    platform.backend.agent_answers(call_id)
    with pytest.raises(tr.TransferError, match="reason"):
        platform.dispatcher.transfer(tr.TransferRequest(call_id, a1, "blind", "agent", str(a2), ""))
    record = platform.dispatcher.transfer(
        tr.TransferRequest(call_id, a1, "warm", "agent", str(a2), "refund_over_limit", "needs approval")
    )
    # The memory backend can consult (telephony.base.ConsultCapable): the caller is held meanwhile.
    assert ("consult", call_id) in [c[:2] for c in platform.backend.commands]
    assert platform.backend.calls[call_id].on_hold
    assert platform.ringing(call_id) == a2
    platform.backend.agent_answers(call_id)  # the consultation starts; the caller stays on hold
    assert platform.backend.calls[call_id].on_hold
    platform.dispatcher.complete_warm(record.id)
    assert platform.backend.commands[-1] == ("complete_consult", call_id, None)
    assert not platform.backend.calls[call_id].on_hold
    assert platform.agent(a1).state == "wrap_up" and platform.agent(a2).state == "on_call"
    platform.free(a3)
    platform.dispatcher.transfer(tr.TransferRequest(call_id, a2, "queue", "queue", "billing", "escalate", "VIP"))
    assert platform.ringing(call_id) == a3
    platform.backend.agent_answers(call_id)
    events = platform.of(CallTransferred)
    assert [(e.kind, e.reason, e.note) for e in events] == [
        ("warm", "refund_over_limit", "needs approval"),
        ("queue", "escalate", "VIP"),
    ]
    with platform.sessions() as s:
        seen = tr.handover(s, call_id)
        assert seen.first_reason == "refund_over_limit"
        assert tr.transfer_counts(s) == {("warm", "refund_over_limit"): 1, ("queue", "escalate"): 1}


def test_two_dispatchers_sharing_a_database_ring_only_their_own_callers(
    session_factory: sessionmaker[Session], settings: Any
) -> None:
    """Two platforms (as two ``callcentre serve`` processes would be) on one database: each rings only
    callers held by its own backend, and one agent is never offered two calls."""
    from callcentre.db.session import make_engine, make_session_factory

    config = DispatcherConfig(policy=rsv.ReservationPolicy(ring_seconds=15, max_consecutive_misses=2))
    first = Platform(session_factory, config)
    other_engine = make_engine(settings.database.url)
    second = Platform(make_session_factory(other_engine), config)
    try:
        (agent,) = _seed(first.sessions, [4])
        with first.sessions() as s:
            s.execute(update(Agent).where(Agent.id == agent).values(state="on_call"))
            s.commit()
        a = first.arrive("+15550201")
        b = second.arrive("+15550202")
        second.free(agent)  # the agent becomes available; the second process sees it first
        assert second.ringing(b) == agent and first.ringing(a) is None
        first.dispatcher.dispatch()  # the first process tries too: the agent is taken
        assert first.ringing(a) is None
        second.backend.agent_answers(b)
        second.backend.caller_hangs_up(b)
        first.free(agent)
        assert first.ringing(a) == agent
        with first.sessions() as s:
            assert rsv.double_assignments(s) == (0, 0)
    finally:
        other_engine.dispose()


def test_handle_time_learned_when_console_closed_the_leg_first(platform: Platform) -> None:
    """The console's hang-up button closes the leg before the backend reports CallHungUp: the live
    AHT must still learn the handle time from that leg."""
    (agent,) = _seed(platform.sessions, [4])
    call_id = platform.arrive()
    platform.backend.agent_answers(call_id)
    with platform.sessions() as s:  # what ConsoleActions.hangup does before asking the backend
        s.execute(
            update(CallSegment)
            .where(CallSegment.call_id == call_id)
            .values(ended_at=platform.clock.now + timedelta(seconds=95), end_reason="completed")
        )
        s.execute(update(Agent).where(Agent.id == agent).values(state="wrap_up"))
        s.commit()
    platform.clock.advance(95)
    platform.backend.agent_hangs_up(call_id)
    rates = platform.dispatcher.window("billing").rates(platform.clock.now.timestamp())
    assert rates.handled_samples == 1 and rates.aht == pytest.approx(95)


def test_late_answer_after_timeout_stands_if_the_call_still_waits(platform: Platform) -> None:
    a1, a2 = _seed(platform.sessions, [5, 3])
    with platform.sessions() as s:
        s.execute(update(Agent).where(Agent.id == a2).values(state="not_ready"))
        s.commit()
    call_id = platform.arrive()
    assert platform.ringing(call_id) == a1
    platform.clock.advance(16)
    platform.dispatcher.tick()  # the offer expires: the call is waiting again, a1 available
    assert platform.places() == [call_id]
    platform.backend.agent_answers(call_id)  # ...and a1 picks up a moment later
    assert platform.agent(a1).state == "on_call"
    assert platform.places() == []
    with platform.sessions() as s:
        assert s.get(Call, call_id).state == "connected"  # type: ignore[union-attr]
        assert rsv.consecutive_misses(s, a1) == 0
        assert rsv.double_assignments(s) == (0, 0)
