"""Callbacks end to end through the real parts: the shipped IVR flow (IvrService + IvrEngine + the
database directory), the real dispatcher and router, the demo database on SQLite, and the in-process
telephony backend (``telephony/memory.py``, the SIMULATION backend: its ``call_back`` is driven by
the explicit hooks ``agent_answers`` / ``agent_rejects`` / ``customer_answers`` /
``customer_unavailable`` instead of a network). Time is a hand-moved clock, never a sleep.

A queued caller is offered a callback, presses the key, hangs up and keeps their place ahead of later
callers; the reserved agent is rung first and the customer dialled only after the agent answered; an
agent who does not answer costs no attempt; a busy customer is retried no earlier than the retry time,
from the same place; the last unanswered attempt gives the callback up where supervisors see it; a
backend that cannot dial publishes ``CallbackDue`` and leaves a visible trace instead of a silent loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from agent_console.actions import ConsoleActions
from agent_console.services import metrics
from agent_console.services.screen_pop import build_screen_pop
from callcentre.bus import EventBus
from callcentre.cli import main
from callcentre.db.models import Agent, AgentOfferStreak, Call, CallContextItem, CallSegment, QueueEntry
from callcentre.db.session import make_engine, make_session_factory
from callcentre.demo_data import demo_customer
from callcentre.directory import DatabaseDirectory
from callcentre.domain.events import (
    AgentStateChanged,
    CallbackRequested,
    CallbackUnanswered,
    CallEnded,
    CallHungUp,
)
from callcentre.ivr_service import IvrService
from callcentre.settings import Settings
from ivr.actions import Enqueue, Gather, Hangup, RequestCallback
from ivr.engine import IvrEngine
from ivr.flow import default_flow_path, load_flow
from routing import reservations as rsv
from routing.callbacks import CallbackDue, CallbackProgress, callback_counts, callback_status, label
from routing.dispatcher import Dispatcher, DispatcherConfig
from routing.queue_cli import queue_status
from routing.reports import compute_metrics
from telephony.memory import MemoryBackend

RING = 15.0
CUSTOMER_RING = 25.0
RETRY = 300.0


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday morning, inside opening hours

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class NoDialMemoryBackend(MemoryBackend):
    """The simulation backend with its outbound calling taken away: a stand-in for a backend that
    cannot place callbacks (``telephony.base.can_call_back`` is False for it)."""

    name = "memory-no-dial"
    call_back = None  # type: ignore[assignment]


class Rig:
    """Bus + memory backend + IvrService (shipped flow) + dispatcher on a copy of the demo database."""

    def __init__(self, settings: Settings, backend: MemoryBackend, max_attempts: int = 3) -> None:
        self.url = settings.database.url
        self.engine = make_engine(self.url)
        self.sessions: sessionmaker[Session] = make_session_factory(self.engine)
        self.clock = Clock()
        self.bus = EventBus()
        self.backend = backend
        self.events: list[Any] = []
        self.bus.subscribe(object, self.events.append)
        directory = DatabaseDirectory(self.sessions)
        self.ivr = IvrService(
            self.bus, backend, IvrEngine(load_flow(default_flow_path()), directory), self.sessions, clock=self.clock
        )
        config = DispatcherConfig(
            policy=rsv.ReservationPolicy(ring_seconds=RING, max_consecutive_misses=3),
            announce_every=60.0,
            callback_offer_after=60.0,
            callback_ring_seconds=CUSTOMER_RING,
            callback_max_attempts=max_attempts,
            callback_retry_seconds=RETRY,
        )
        self.dispatcher = Dispatcher(self.bus, backend, self.sessions, config=config, clock=self.clock).subscribe()
        self.console = ConsoleActions(self.sessions, self.bus, backend, dispatcher=self.dispatcher)
        backend.start(self.bus)
        with self.sessions() as s:
            self.ids = {a.login: a.id for a in s.scalars(select(Agent))}
            s.execute(update(Agent).values(state="logged_out", state_since=self.clock()))
            s.commit()
        # Live history for the wait estimate: 40 handled calls of 300 s, so a long wait is "reliable".
        window = self.dispatcher.window("billing")
        for i in range(40):
            window.handled(self.clock.now.timestamp() - i, 300.0)

    def close(self) -> None:
        self.dispatcher.stop()
        self.engine.dispose()

    # -- callers ----------------------------------------------------------------------------------
    def caller(self, n: int, choice: str = "1") -> str:
        """Demo customer ``n`` calls and goes through the IVR to the menu choice (1 = billing)."""
        customer = demo_customer(n)
        call_id = self.backend.place_call(customer["phone"])
        for _ in range(8):
            action = self.backend.last_action(call_id)
            if isinstance(action, Enqueue | RequestCallback):
                return call_id
            assert isinstance(action, Gather), action
            ids = {p.id for p in action.prompts}
            self.backend.press(call_id, customer["pin"] if "enter_pin" in ids else choice)
        raise AssertionError(f"caller never left the IVR: {self.backend.heard_ids(call_id)}")

    def tick_after(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.dispatcher.tick()

    # -- agents -----------------------------------------------------------------------------------
    def set_state(self, login: str, state: str) -> int:
        agent_id = self.ids[login]
        with self.sessions() as s:
            s.execute(update(Agent).where(Agent.id == agent_id).values(state=state, state_since=self.clock()))
            s.commit()
        if state == "available":
            self.bus.publish(AgentStateChanged(agent_id, "available", at=self.clock()))
        return agent_id

    def agent(self, agent_id: int) -> Agent:
        with self.sessions() as s:
            found = s.get(Agent, agent_id)
            assert found is not None
            return found

    def ringing(self, call_id: str) -> int | None:
        ring = self.backend.calls[call_id].ringing_agent
        return ring.agent_id if ring is not None else None

    # -- reading the database -----------------------------------------------------------------------
    def entry(self, call_id: str) -> QueueEntry:
        with self.sessions() as s:
            found = s.scalars(select(QueueEntry).where(QueueEntry.call_id == call_id)).one()
            s.expunge(found)
            return found

    def call(self, call_id: str) -> Call:
        with self.sessions() as s:
            found = s.get(Call, call_id)
            assert found is not None
            s.expunge(found)
            return found

    def places(self, queue: str = "billing") -> list[str]:
        with self.sessions() as s:
            return [e.call_id for e in rsv.waiting_entries(s, queue)]

    def segments(self, call_id: str) -> list[tuple[int | None, bool, str]]:
        """(agent, started?, end reason) per leg of the call, in order."""
        with self.sessions() as s:
            return [
                (g.agent_id, g.started_at is not None, g.end_reason)
                for g in s.scalars(select(CallSegment).where(CallSegment.call_id == call_id).order_by(CallSegment.id))
            ]

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def progress(self, call_id: str) -> list[tuple[str, int]]:
        return [(p.state, p.attempt) for p in self.of(CallbackProgress) if p.call_id == call_id]


@pytest.fixture
def rig(demo_settings: Settings) -> Iterator[Rig]:
    made = Rig(demo_settings, MemoryBackend())
    yield made
    made.close()


def choose_callback(rig: Rig, call_id: str) -> None:
    """The caller hears the callback offer over the hold music, presses 1 and is said goodbye to."""
    offer = rig.backend.last_action(call_id)
    assert isinstance(offer, Gather) and "queue_callback_offer" in [p.id for p in offer.prompts]
    rig.backend.press(call_id, "1")
    goodbye = rig.backend.last_action(call_id)
    assert isinstance(goodbye, Hangup) and goodbye.reason == "callback"
    rig.backend.caller_hangs_up(call_id)  # the caller's own leg is gone from here on


def lone_callback(rig: Rig) -> tuple[int, str]:
    """agent01 busy, two callers wait, the second chooses a callback and hangs up; the first caller is taken
    out of the queue, so the callback is the only call waiting. Returns (agent01's id, the callback's call id)."""
    agent = rig.set_state("agent01", "on_call")
    rig.caller(1)
    chooser = rig.caller(2)
    rig.tick_after(60)
    choose_callback(rig, chooser)
    with rig.sessions() as s:
        s.execute(update(QueueEntry).where(QueueEntry.call_id != chooser).values(status="abandoned"))
        s.commit()
    return agent, chooser


def test_callback_keeps_place_agent_first_then_customer_retry_then_connected(rig: Rig) -> None:
    busy1 = rig.set_state("agent01", "on_call")  # both billing agents busy: callers wait
    busy2 = rig.set_state("agent06", "on_call")
    first = rig.caller(1)
    chooser = rig.caller(2)
    third = rig.caller(4)  # customers 1, 2, 4, 5: no earlier calls, so no preferred agent in the way
    assert rig.places() == [first, chooser, third]
    ivr_context = rig_context(rig, chooser)
    assert ivr_context, "the IVR saved what the caller told it"

    rig.tick_after(60)  # first announcement: position, estimated wait, callback offer
    choose_callback(rig, chooser)
    assert [(e.call_id, e.keep_place) for e in rig.of(CallbackRequested)] == [(chooser, True)]
    later = rig.caller(5)  # a later caller queues behind the callback
    assert rig.places() == [first, chooser, third, later]
    assert rig.call(chooser).outcome == "callback"

    # agent01 frees up and serves the first caller (a live caller: connect_agent, not call_back).
    rig.set_state("agent01", "available")
    assert rig.ringing(first) == busy1
    rig.backend.agent_answers(first)
    rig.backend.caller_hangs_up(first)
    assert rig.backend.callbacks == []

    # agent01 frees up again: the callback is next in line. The AGENT is rung first, with the number.
    rig.set_state("agent01", "available")
    (dial,) = rig.backend.callbacks
    assert (dial.call_id, dial.number, dial.agent.agent_id) == (chooser, demo_customer(2)["phone"], busy1)
    assert (dial.ring_seconds, dial.customer_ring_seconds) == (RING, CUSTOMER_RING)
    assert rig.agent(busy1).state == "ringing" and rig.of(CallbackDue) == []
    with rig.sessions() as s:
        assert callback_status(s, chooser, max_attempts=3)["state"] == "ringing"  # type: ignore[index]

    # The agent does not answer: place kept, no customer attempt counted.
    rig.backend.agent_rejects(chooser)
    entry = rig.entry(chooser)
    assert entry.status == "waiting" and entry.callback_attempts == 0 and entry.callback_retry_at is None
    assert rig.places()[:1] == [chooser]
    # agent01 is now excluded from this call (they missed it) and gets the next caller instead.
    assert rig.ringing(third) == busy1
    rig.backend.agent_answers(third)  # and stays busy with them for the rest of this test

    # agent06 frees up: the callback goes to them; they answer, the customer is dialled (attempt 1).
    rig.set_state("agent06", "available")
    assert [d.agent.agent_id for d in rig.backend.callbacks] == [busy1, busy2]
    rig.backend.agent_answers(chooser)
    entry = rig.entry(chooser)
    assert entry.status == "dialling" and entry.callback_attempts == 1
    assert rig.agent(busy2).state == "on_call"
    assert rig.call(chooser).answered_at is None  # nobody is connected to the customer yet
    assert rig.progress(chooser) == [("dialling", 1)]

    # The customer is busy: agent06's leg ends with that reason, wrap-up as after any call.
    rig.backend.customer_unavailable(chooser, "busy")
    assert rig.agent(busy2).state == "wrap_up"
    assert rig.segments(chooser)[-1] == (busy2, False, "customer_busy")
    entry = rig.entry(chooser)
    assert entry.status == "waiting" and entry.callback_result == "busy" and entry.callback_attempts == 1
    assert entry.callback_retry_at == rig.clock.now + timedelta(seconds=RETRY)
    assert rig.places() == [chooser, later]  # same place, ahead of the later caller
    (retry,) = [p for p in rig.of(CallbackProgress) if p.state == "retry"]
    assert retry.reason == "busy" and retry.retry_at == entry.callback_retry_at
    with rig.sessions() as s:
        status = callback_status(s, chooser, max_attempts=3)
        assert status is not None and status["state"] == "retry" and "retry at 10:" in status["label"]
        assert callback_counts(s, rig.clock.now, rig.clock.now.replace(hour=0))["billing"]["retry_pending"] == 1

    # Wrap-up of the unanswered attempt (console): notes kept, the call's resolution is not decided by it.
    rig.console.wrap_up(busy2, chooser, "follow_up", False, "customer busy, will retry")
    assert rig.call(chooser).resolved is None
    # agent06 is free, but the callback's retry time has not come: the later caller is served first.
    assert rig.ringing(later) == busy2
    rig.backend.agent_answers(later)
    rig.backend.caller_hangs_up(later)
    rig.console.wrap_up(busy2, later, "resolved", True, "")
    assert rig.agent(busy2).state == "available"
    rig.tick_after(RETRY - 61)  # still before the retry time: nobody is rung for the callback
    assert len(rig.backend.callbacks) == 2 and rig.agent(busy2).state == "available"
    rig.tick_after(61)  # retry time reached: dialled again
    assert [d.agent.agent_id for d in rig.backend.callbacks] == [busy1, busy2, busy2]

    # Attempt 2: the customer answers. Connected; the screen pop is the ORIGINAL call's IVR context.
    rig.backend.agent_answers(chooser)
    rig.backend.customer_answers(chooser)
    assert rig.progress(chooser)[-2:] == [("dialling", 2), ("connected", 2)]
    call = rig.call(chooser)
    assert call.answered_at == rig.clock.now and call.outcome == "callback"
    assert rig.segments(chooser)[-1] == (busy2, True, "")
    with rig.sessions() as s:
        pop = build_screen_pop(s, chooser, viewer_agent_id=busy2)
    assert pop is not None
    assert [(i["key"], i["value"]) for i in pop["ivr"]] == ivr_context
    assert pop["callback"]["state"] == "connected" and pop["callback"]["attempt"] == 2

    # Hang up → wrap-up; the call ends as a callback; resolved by its only agent → first-contact resolution.
    rig.clock.advance(120)
    rig.backend.caller_hangs_up(chooser)
    assert rig.agent(busy2).state == "wrap_up"
    assert [e.outcome for e in rig.of(CallEnded) if e.call_id == chooser] == ["callback"]
    rig.console.wrap_up(busy2, chooser, "resolved", True, "sorted the bill")
    call = rig.call(chooser)
    assert call.outcome == "callback" and call.resolved is True and call.disposition == "resolved"
    with rig.sessions() as s:
        (row,) = metrics.outcomes(s, [s.get(Call, chooser)])  # type: ignore[list-item]
    assert row.agents == (str(busy2),)  # the unanswered attempt and agent01's miss are not "handled by"
    assert row.answered and row.resolved_first
    assert compute_metrics([row], threshold=20).fcr == 1.0
    assert rig.entry(chooser).status == "done"


def rig_context(rig: Rig, call_id: str) -> list[tuple[str, str]]:
    with rig.sessions() as s:
        rows = s.scalars(select(CallContextItem).where(CallContextItem.call_id == call_id).order_by(CallContextItem.id))
        return [(r.key, "••••" if r.sensitive else r.value) for r in rows]


def test_max_attempts_gives_up_visibly(rig: Rig) -> None:
    agent, chooser = lone_callback(rig)
    for attempt, reason in enumerate(("no-answer", "rejected", "failed"), start=1):
        rig.set_state("agent01", "available")
        assert len(rig.backend.callbacks) == attempt
        rig.backend.agent_answers(chooser)
        rig.backend.customer_unavailable(chooser, reason)
        assert rig.entry(chooser).callback_attempts == attempt
        rig.console.wrap_up(agent, chooser, "follow_up", False, "")
        rig.tick_after(RETRY)
    entry = rig.entry(chooser)
    assert entry.status == "done" and entry.callback_result == "given-up"
    assert rig.call(chooser).outcome == "callback_failed"
    assert [p.state for p in rig.of(CallbackProgress) if p.call_id == chooser][-1] == "given-up"
    assert [e.outcome for e in rig.of(CallEnded) if e.call_id == chooser] == ["callback_failed"]
    assert [g[2] for g in rig.segments(chooser)] == ["customer_no_answer", "customer_rejected", "customer_unreachable"]
    rig.tick_after(RETRY)  # given up: never dialled again
    assert len(rig.backend.callbacks) == 3 and rig.agent(agent).state == "available"
    with rig.sessions() as s:
        status = callback_status(s, chooser, max_attempts=3)
        assert status is not None and status["state"] == "given-up"
        assert callback_counts(s, rig.clock.now, rig.clock.now.replace(hour=0))["billing"]["given_up"] == 1
        assert queue_status(s, rig.clock.now)["callbacks"]["billing"]["given_up"] == 1
    table = CliRunner().invoke(main, ["--database", rig.url, "queues", "status"])
    assert table.exit_code == 0, table.output
    header, billing = [line for line in table.output.splitlines() if "given up today" in line or "billing " in line][
        -2:
    ]
    assert "given up today" in header and billing.split()[-1] == "1"
    assert demo_customer(2)["phone"] not in table.output


def test_callback_chosen_in_the_ivr_menu_is_queued_and_dialled(rig: Rig) -> None:
    """Menu option 9 ("call me back") ends the IVR with RequestCallback: the dispatcher gives it a place
    in the flow's queue (general) and dials it like a callback chosen while queued."""
    chooser = rig.caller(8, choice="9")
    assert isinstance(rig.backend.last_action(chooser), RequestCallback)
    entry = rig.entry(chooser)
    assert entry.queue == "general" and entry.callback_number == demo_customer(8)["phone"]
    agent = rig.set_state("agent06", "available")
    (dial,) = rig.backend.callbacks
    assert (dial.call_id, dial.agent.agent_id, dial.number) == (chooser, agent, demo_customer(8)["phone"])


def test_backend_that_cannot_dial_publishes_callback_due_and_shows_it(demo_settings: Settings) -> None:
    rig = Rig(demo_settings, NoDialMemoryBackend())
    try:
        agent, chooser = lone_callback(rig)
        rig.set_state("agent01", "available")
        (due,) = rig.of(CallbackDue)
        assert (due.call_id, due.agent_id, due.number) == (chooser, agent, demo_customer(2)["phone"])
        assert rig.agent(agent).state == "ringing"
        rig.tick_after(RING)  # nobody dialled: the reservation runs out
        assert rig.agent(agent).state == "available"
        with rig.sessions() as s:
            streak = s.get(AgentOfferStreak, agent)
            assert streak is None or streak.consecutive_misses == 0  # not the agent's miss
            status = callback_status(s, chooser, max_attempts=3)
            assert status is not None and status["state"] == "not-dialled"
            assert queue_status(s, rig.clock.now)["callbacks"]["billing"]["not_dialled"] == 1
        entry = rig.entry(chooser)
        assert entry.status == "waiting" and entry.callback_attempts == 0
        assert entry.callback_retry_at == rig.clock.now + timedelta(seconds=RETRY)
        rig.tick_after(RETRY - 1)
        assert len(rig.of(CallbackDue)) == 1  # the agent is not tied up every second meanwhile
        rig.tick_after(1)
        assert len(rig.of(CallbackDue)) == 2
    finally:
        rig.close()


def test_callback_retry_rules_in_the_database(db_sessions: sessionmaker[Session]) -> None:
    """The reservation functions alone, on a SQLite file and on the real PostgreSQL server: a callback
    whose retry time is in the future can be neither listed for routing nor reserved by any process;
    attempts count customer diallings only; the place (``enqueued_at``, id) never changes."""
    from tests.integration.test_reservations import POLICY, T0, _agents, _queue

    with db_sessions() as s:
        a1, a2 = _agents(s, 2)
        first, cb, last = _queue(s, 3)
        assert rsv.request_callback(s, cb, "+15550001", now=T0)
        s.execute(update(Call).where(Call.id == cb).values(state="ended", outcome="callback"))
        s.execute(update(QueueEntry).where(QueueEntry.call_id == first).values(status="done"))
        s.commit()
        place = (rsv.waiting_entries(s)[0].enqueued_at, rsv.waiting_entries(s)[0].id)

        # The agent does not answer: no attempt counted.
        assert rsv.reserve(s, cb, a1, now=T0 + timedelta(seconds=10), policy=POLICY) is not None
        assert rsv.missed(s, cb, a1, now=T0 + timedelta(seconds=20), policy=POLICY) is not None
        s.commit()
        assert rsv.waiting_entries(s)[0].callback_attempts == 0
        # The next agent answers: one customer dialling; the leg is not started, the call not answered.
        assert rsv.reserve(s, cb, a2, now=T0 + timedelta(seconds=30), policy=POLICY) is not None
        segment = rsv.answered(s, cb, a2, now=T0 + timedelta(seconds=31))
        s.commit()
        assert segment is not None and segment.started_at is None
        assert s.get(Call, cb).answered_at is None  # type: ignore[union-attr]
        attempt = rsv.callback_unanswered(
            s, cb, a2, now=T0 + timedelta(seconds=60), retry_seconds=RETRY, max_attempts=2, reason="busy"
        )
        s.commit()
        assert attempt is not None and (attempt.result, attempt.attempts, attempt.agent_to_wrap_up) == (
            "retry",
            1,
            True,
        )
        assert rsv.callback_unanswered(s, cb, a2, now=T0, retry_seconds=RETRY, max_attempts=2) is None  # stale
        retry_at = T0 + timedelta(seconds=60 + RETRY)

        s.execute(update(Agent).values(state="available"))
        s.commit()
        before = retry_at - timedelta(seconds=1)
        assert [e.call_id for e in rsv.waiting_entries(s, due_at=before)] == [last]
        assert [e.call_id for e in rsv.waiting_entries(s)] == [cb, last]  # still holds its place
        assert rsv.position(s, last) == 2
        assert rsv.reserve(s, cb, a1, now=before, policy=POLICY) is None  # no process may take it early
        s.rollback()
        assert rsv.reserve(s, cb, a1, now=retry_at, policy=POLICY) is not None
        rsv.answered(s, cb, a1, now=retry_at + timedelta(seconds=1))
        connected = rsv.callback_connected(s, cb, a1, now=retry_at + timedelta(seconds=5))
        s.commit()
        assert connected is not None and connected.started_at is not None
        entry = s.scalars(select(QueueEntry).where(QueueEntry.call_id == cb)).one()
        assert (entry.enqueued_at, entry.id) == place and entry.callback_attempts == 2
        assert entry.status == "connected" and entry.callback_result == "connected"
        assert s.get(Call, cb).answered_at == retry_at + timedelta(seconds=5)  # type: ignore[union-attr]


def test_last_attempt_gives_up_in_the_database(db_sessions: sessionmaker[Session]) -> None:
    from tests.integration.test_reservations import POLICY, T0, _agents, _queue

    with db_sessions() as s:
        (agent,) = _agents(s, 1)
        (cb,) = _queue(s, 1)
        assert rsv.request_callback(s, cb, "+15550001", now=T0)
        assert rsv.reserve(s, cb, agent, now=T0, policy=POLICY) is not None
        rsv.answered(s, cb, agent, now=T0 + timedelta(seconds=1))
        attempt = rsv.callback_unanswered(
            s, cb, agent, now=T0 + timedelta(seconds=30), retry_seconds=RETRY, max_attempts=1, reason="bogus"
        )
        s.commit()
        assert attempt is not None and (attempt.result, attempt.reason, attempt.retry_at) == (
            "given-up",
            "failed",
            None,
        )
        assert attempt.agent_to_wrap_up and s.get(Agent, agent).state == "wrap_up"  # type: ignore[union-attr]
        entry = s.scalars(select(QueueEntry).where(QueueEntry.call_id == cb)).one()
        assert (entry.status, entry.callback_result) == ("done", "given-up")
        assert s.get(Call, cb).outcome == "callback_failed"  # type: ignore[union-attr]
        assert callback_counts(s, T0 + timedelta(seconds=31), T0)["general"]["given_up"] == 1


class UnroutableMemoryBackend(MemoryBackend):
    """The simulation backend whose outbound calls fail to start (as a SIP backend with no outbound
    route would), with the dialled URI in the error text — which must not reach the log."""

    name = "memory-unroutable"

    def call_back(
        self, call_id: str, number: str, agent: Any, ring_seconds: float, customer_ring_seconds: float
    ) -> None:
        raise RuntimeError(f"no route to sip:{number}@nowhere")


def test_callback_that_cannot_start_releases_the_agent_at_once(
    demo_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(demo_settings, UnroutableMemoryBackend())
    try:
        agent, chooser = lone_callback(rig)
        caplog.clear()
        rig.set_state("agent01", "available")
        assert rig.agent(agent).state == "available"  # not left ringing for nothing
        entry = rig.entry(chooser)
        assert (entry.status, entry.callback_result, entry.callback_attempts) == ("waiting", "not-dialled", 0)
        assert entry.callback_retry_at == rig.clock.now + timedelta(seconds=RETRY)
        with rig.sessions() as s:
            assert rsv.consecutive_misses(s, agent) == 0
        assert "RuntimeError" in caplog.text and demo_customer(2)["phone"] not in caplog.text
    finally:
        rig.close()


def test_agent_ending_the_attempt_is_not_counted_and_retries_at_its_place(rig: Rig) -> None:
    """The agent presses hang-up on the console while the customer's phone rings: the memory backend
    reports ``CallbackUnanswered("agent-ended")`` (not ``CallHungUp``); the agent wraps up; the callback
    keeps its ORIGINAL place, waits ``callback_retry_seconds`` and its attempt is given back."""
    agent, chooser = lone_callback(rig)
    later = rig.caller(4)  # queues behind the callback
    hung_up_before = [e for e in rig.of(CallHungUp) if e.call_id == chooser]

    rig.set_state("agent01", "available")
    rig.backend.agent_answers(chooser)
    assert rig.entry(chooser).callback_attempts == 1
    rig.console.hangup(agent, chooser)  # was a 409 "the customer is being dialled"

    assert ("hangup", chooser, None) in rig.backend.commands
    (ended,) = [e for e in rig.of(CallbackUnanswered) if e.call_id == chooser]
    assert (ended.agent_id, ended.reason) == (agent, "agent-ended")
    assert [e for e in rig.of(CallHungUp) if e.call_id == chooser] == hung_up_before
    assert rig.agent(agent).state == "wrap_up"
    assert rig.segments(chooser)[-1] == (agent, False, "agent_ended")
    entry = rig.entry(chooser)
    assert entry.status == "waiting" and entry.callback_result == "agent-ended"
    assert entry.callback_attempts == 0  # the customer was not given a fair chance
    assert entry.callback_retry_at == rig.clock.now + timedelta(seconds=RETRY)
    assert rig.places() == [chooser, later]
    retry = [p for p in rig.of(CallbackProgress) if p.call_id == chooser][-1]
    assert (retry.state, retry.reason, retry.retry_at) == ("retry", "agent-ended", entry.callback_retry_at)
    expected = f"you ended the attempt — retry at {entry.callback_retry_at:%H:%M} UTC"
    assert label(retry.state, retry.reason, retry.retry_at) == expected
    with rig.sessions() as s:
        status = callback_status(s, chooser, max_attempts=3)
        assert status is not None and (status["state"], status["label"]) == ("retry", expected)
    assert rig.call(chooser).outcome == "callback"

    # Wrap-up only adds notes (the customer never came on the line); the later caller is served meanwhile.
    rig.console.wrap_up(agent, chooser, "follow_up", False, "wrong number on screen, ended it")
    assert rig.call(chooser).resolved is None
    assert rig.ringing(later) == agent
    rig.backend.agent_answers(later)
    rig.backend.caller_hangs_up(later)
    rig.console.wrap_up(agent, later, "resolved", True, "")
    rig.tick_after(RETRY - 61)
    assert len(rig.backend.callbacks) == 1
    rig.tick_after(61)  # retry time: dialled again, and this is the customer's FIRST counted attempt
    assert len(rig.backend.callbacks) == 2
    rig.backend.agent_answers(chooser)
    assert rig.progress(chooser)[-1] == ("dialling", 1)
    rig.backend.customer_answers(chooser)
    assert rig.progress(chooser)[-1] == ("connected", 1)


def test_agent_ended_attempts_in_a_row_give_up_visibly(rig: Rig) -> None:
    """An agent-ended attempt costs the customer nothing, but ``callback_max_attempts`` of them IN A ROW
    give the callback up (no endless loop); a customer attempt in between resets the run."""
    agent, chooser = lone_callback(rig)
    hung_up_before = [e for e in rig.of(CallHungUp) if e.call_id == chooser]  # the caller's own leg
    # console hang-up, the customer's no-answer, then the agent's phone hang-up (twice), then console again.
    steps = ("console", "no-answer", "phone", "phone", "console")
    for n, step in enumerate(steps, start=1):
        rig.set_state("agent01", "available")
        assert len(rig.backend.callbacks) == n
        rig.backend.agent_answers(chooser)
        if step == "console":
            rig.console.hangup(agent, chooser)
        elif step == "phone":
            rig.backend.agent_hangs_up(chooser)
        else:
            rig.backend.customer_unavailable(chooser, step)
        assert rig.agent(agent).state == "wrap_up"
        rig.console.wrap_up(agent, chooser, "follow_up", False, "")
        if n < len(steps):
            entry = rig.entry(chooser)
            assert entry.status == "waiting" and entry.callback_attempts == 1 - (n == 1)
            rig.tick_after(RETRY)
    entry = rig.entry(chooser)
    assert entry.status == "done" and entry.callback_result == "given-up" and entry.callback_attempts == 1
    assert rig.call(chooser).outcome == "callback_failed"
    last = [p for p in rig.of(CallbackProgress) if p.call_id == chooser][-1]
    assert (last.state, last.reason) == ("given-up", "agent-ended")
    assert "ended by the agent" in label(last.state, last.reason, last.retry_at)
    assert [e.outcome for e in rig.of(CallEnded) if e.call_id == chooser] == ["callback_failed"]
    assert [g[2] for g in rig.segments(chooser) if g[2] != "no_answer"] == [
        "agent_ended", "customer_no_answer", "agent_ended", "agent_ended", "agent_ended",
    ]
    assert [e for e in rig.of(CallHungUp) if e.call_id == chooser] == hung_up_before
    rig.tick_after(RETRY)
    assert len(rig.backend.callbacks) == len(steps)
    with rig.sessions() as s:
        assert callback_counts(s, rig.clock.now, rig.clock.now.replace(hour=0))["billing"]["given_up"] == 1


def test_the_choosing_callers_late_hang_up_leaves_the_callback_reservation_alone(rig: Rig) -> None:
    """An agent frees up while the caller who chose the callback still hears the goodbye: the agent is
    reserved and rung for the callback at once, and the caller's own leg ends only afterwards. That
    ``CallHungUp`` belongs to the old leg: the agent keeps ringing for the callback (not freed, no miss)
    and the callback keeps its reservation."""
    agent = rig.set_state("agent01", "on_call")
    rig.caller(1)
    chooser = rig.caller(2)
    rig.tick_after(60)
    offer = rig.backend.last_action(chooser)
    assert isinstance(offer, Gather)
    rig.backend.press(chooser, "1")  # chose the callback; the goodbye is still playing
    with rig.sessions() as s:
        s.execute(update(QueueEntry).where(QueueEntry.call_id != chooser).values(status="abandoned"))
        s.commit()
    rig.set_state("agent01", "available")
    (dial,) = rig.backend.callbacks
    assert dial.call_id == chooser and dial.agent.agent_id == agent
    rig.bus.publish(CallHungUp(chooser, by="caller"))  # the old leg's goodbye ends now
    assert rig.agent(agent).state == "ringing"
    assert rig.entry(chooser).status == "offered"
    rig.backend.agent_answers(chooser)
    rig.backend.customer_answers(chooser)
    assert rig.agent(agent).state == "on_call" and rig.entry(chooser).status == "connected"
