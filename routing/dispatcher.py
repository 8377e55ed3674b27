"""The dispatcher: router ↔ database reservations ↔ telephony, driven by events on the bus.

Event → work (the pipeline, in one table at :meth:`Dispatcher.subscribe`):

* ``CallQueued``      → overflow / after-hours rules, the call takes its place, first announcement, dispatch
* ``AgentStateChanged`` (available) → dispatch: the freed agent is offered the best waiting call
* ``AgentAnswered``   → reservation answered, segment started, agent On call, transfer completed
* ``AgentNoAnswer``   → the call goes back to its ORIGINAL place; M misses in a row → agent Not Ready
* ``ConsultHandedOver`` → the first agent hung up while consulting: recorded like ``complete_warm``, or (the
  consulted agent still rings) the first agent wraps up and the caller waits for them; if they miss it,
  the caller goes back to the queue at the ORIGINAL place (the transfer is recorded as ``failed``)
* ``CallHungUp``      → a waiting caller leaves (unless they chose a callback), a ringing agent is freed
* ``DigitsReceived``  → the callback key of a queued caller: they hang up and keep their place
* ``CallbackRequested`` (from the IVR menu, not the queue) → a place in the flow's queue as a callback
* ``CallbackAnswered`` → the customer picked up a callback: the agent's leg starts, the call is answered
* ``CallbackUnanswered`` → the customer did not: agent to wrap-up; the entry retries later from its
  ORIGINAL place, or after ``callback_max_attempts`` diallings it is given up (``callback_failed``);
  ``reason="agent-ended"`` (the agent gave up on ringback) is not counted, but waits the same and gives up
  after ``callback_max_attempts`` of those in a row
* :meth:`tick` (every second from :meth:`start`'s thread, or by hand in tests): expire reservations
  whose agent never answered, periodic announcements, dispatch

Dispatch reads waiting calls and available agents, asks the pure :class:`routing.router.Router` for
decisions, and makes each one a reservation in its own transaction; only a reservation that was won
rings a phone (``backend.connect_agent``, or ``backend.call_back`` for a caller who chose a callback:
agent first, then the customer — :class:`telephony.base.CallbackCapable`), so several dispatcher
processes can share a database.
``Call.route_why`` gets the decision's explanation. Logs carry call and agent ids only.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from callcentre.bus import EventBus
from callcentre.db.base import utcnow
from callcentre.db.models import (
    Agent,
    AgentSkill,
    Call,
    CallContextItem,
    CallSegment,
    Queue,
    QueueEntry,
    TransferRecord,
)
from callcentre.db.models import Reservation as ReservationRow
from callcentre.db.session import session_scope
from callcentre.domain.agent_state import AgentState
from callcentre.domain.call_state import CallState
from callcentre.domain.context import CallContext, ContextItem
from callcentre.domain.events import (
    AgentAnswered,
    AgentNoAnswer,
    AgentStateChanged,
    CallbackAnswered,
    CallbackRequested,
    CallbackUnanswered,
    CallEnded,
    CallHungUp,
    CallOffered,
    CallQueued,
    CallTransferred,
    ConsultHandedOver,
    DigitsReceived,
)
from ivr.actions import Gather, Hangup, Prompt, Transfer
from routing import history, reservations, transfers
from routing import queue_experience as qx
from routing.callbacks import CallbackDue, CallbackProgress
from routing.router import AgentView, Decision, Router, Task
from routing.skills import QueuePolicy, RelaxationStep, check_requirements, parse_requirements
from telephony.base import AgentEndpoint, TelephonyBackend, can_call_back, can_consult

log = logging.getLogger(__name__)


__all__ = ["CallbackDue", "CallbackProgress", "Dispatcher", "DispatcherConfig", "wait_estimate_summary"]


@dataclass
class DispatcherConfig:
    policy: reservations.ReservationPolicy = field(default_factory=reservations.ReservationPolicy)
    rules: Mapping[str, qx.QueueRules] = field(default_factory=dict)
    """Per-queue overflow / after-hours / announcement rules; queues not named get the defaults."""
    estimates: qx.EstimatePolicy = field(default_factory=qx.EstimatePolicy)
    tick_seconds: float = 1.0
    rate_window_seconds: float = 3600.0
    announce_every: float = 60.0
    """For queues without their own rules."""
    callback_offer_after: float | None = 60.0
    """For queues without their own rules."""
    callback_ring_seconds: float = 30.0
    """How long the customer's phone rings when the platform calls them back."""
    callback_max_attempts: int = 3
    """Diallings of the customer before the callback is given up (an agent not answering is no attempt)."""
    callback_retry_seconds: float = 300.0
    """After an unanswered attempt (or a backend that could not dial) the entry waits this long, in its place."""

    @classmethod
    def from_settings(cls, routing: Any) -> DispatcherConfig:
        """From ``Settings.routing`` (:class:`callcentre.settings.RoutingSettings`)."""
        return cls(
            policy=reservations.ReservationPolicy(routing.ring_seconds, routing.max_consecutive_misses),
            tick_seconds=routing.tick_seconds,
            announce_every=routing.announce_every,
            callback_offer_after=routing.callback_offer_after,
            callback_ring_seconds=routing.callback_ring_seconds,
            callback_max_attempts=routing.callback_max_attempts,
            callback_retry_seconds=routing.callback_retry_seconds,
        )


def _epoch(at: datetime) -> float:
    return at.timestamp()


def policies_from_queues(queues: Iterable[Queue]) -> list[QueuePolicy]:
    """Router policies from the queues table (``relaxation`` JSON as documented on the model)."""
    out = []
    for q in queues:
        steps = []
        for raw in q.relaxation or []:
            if not isinstance(raw, Mapping) or "after_seconds" not in raw:
                log.warning("queue %s: ignoring malformed relaxation step", q.id)
                continue
            steps.append(
                RelaxationStep(
                    float(raw["after_seconds"]),
                    int(raw["min_level"]) if raw.get("min_level") is not None else None,
                    bool(raw.get("any_skill") or raw.get("any_agent_with_language")),
                )
            )
        try:
            out.append(QueuePolicy(q.name, tuple(sorted(steps, key=lambda s: s.after_seconds)), q.priority))
        except ValueError:
            log.warning("queue %s: invalid relaxation, routing without it", q.id)
            out.append(QueuePolicy(q.name, (), q.priority))
    return out


def queue_requirements(raw: object) -> tuple[tuple[str, int], ...]:
    """``queues.required_skills`` (``[{"skill": "billing", "min_level": 2}]``) as router requirements;
    malformed entries are skipped with a warning rather than stopping the queue."""
    if isinstance(raw, list) and all(isinstance(x, Mapping) for x in raw):
        pairs = [[x.get("skill"), x.get("min_level", 1)] for x in raw]
    else:
        pairs = raw  # type: ignore[assignment]
    try:
        return parse_requirements(pairs)
    except ValueError:
        log.warning("ignoring malformed queue skill requirements")
        return ()


class Dispatcher:
    def __init__(
        self,
        bus: EventBus,
        backend: TelephonyBackend,
        sessions: sessionmaker[Session],
        router: Router | None = None,
        config: DispatcherConfig | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.bus = bus
        self.backend = backend
        self.sessions = sessions
        self.config = config or DispatcherConfig()
        self.clock = clock
        self.owner = reservations.owner_tag()
        self._router = router
        self.windows: dict[str, qx.RateWindow] = {}
        self.estimate_errors = qx.EstimateErrors()
        self._announced: dict[str, datetime] = {}
        self._callback_offered: set[str] = set()
        self._mine: set[str] = set()
        """Calls queued through THIS process's backend: only these (and callbacks, which have no live
        leg) are dispatched here; another process's waiting callers are its own to ring."""
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def router(self) -> Router:
        """Given, or built on first use from the queues table and the last 90 days of first-contact
        outcomes (so wiring needs no database yet)."""
        if self._router is None:
            with self.sessions() as session:
                self._router = Router(
                    policies_from_queues(session.scalars(select(Queue))),
                    history.resolution_model(session, now=self.clock()),
                )
        return self._router

    # -- wiring --------------------------------------------------------------------------------------

    def subscribe(self) -> Dispatcher:
        table: list[tuple[type, Callable[[Any], None]]] = [
            (CallQueued, self.on_queued),
            (AgentStateChanged, self.on_agent_state),
            (AgentAnswered, self.on_answered),
            (AgentNoAnswer, self.on_no_answer),
            (CallHungUp, self.on_hung_up),
            (DigitsReceived, self.on_digits),
            (CallbackRequested, self.on_callback_requested),
            (CallbackAnswered, self.on_callback_answered),
            (CallbackUnanswered, self.on_callback_unanswered),
            (ConsultHandedOver, self.on_handed_over),
        ]
        for event_type, handler in table:
            self.bus.subscribe(event_type, handler)
        return self

    def start(self) -> None:
        """Run :meth:`tick` every ``tick_seconds`` in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="dispatcher-tick", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.config.tick_seconds):
            try:
                self.tick()
            except Exception:  # the loop must survive a bad tick (database hiccup); it is logged
                log.exception("dispatcher tick failed")

    def rules(self, queue: str) -> qx.QueueRules:
        return self.config.rules.get(queue) or qx.QueueRules(
            queue, callback_offer_after=self.config.callback_offer_after, announce_every=self.config.announce_every
        )

    def window(self, queue: str) -> qx.RateWindow:
        found = self.windows.get(queue)
        if found is None:
            found = self.windows[queue] = qx.RateWindow(self.config.rate_window_seconds)
        return found

    # -- events ----------------------------------------------------------------------------------

    def on_queued(self, event: CallQueued) -> None:
        now = self.clock()
        with self._lock:
            with session_scope(self.sessions) as session:
                call = session.get(Call, event.call_id)
                decision = self._entry_decision(session, event.queue, now)
                if decision.kind == "closed":
                    closed = self._close_for_hours(session, event, call, decision, now)
                else:
                    closed = None
                    reservations.enqueue(
                        session,
                        event.call_id,
                        decision.queue,
                        now=now,
                        required_skills=event.required_skills,
                        priority=event.priority,
                        language=event.language,
                        reason=call.reason if call is not None else "",
                        customer_id=call.customer_id if call is not None else None,
                        preferred_agent_id=self._preferred_agent(session, call),
                    )
            if closed is not None:
                self.backend.perform(event.call_id, closed)
                return
            if decision.kind == "overflow":
                log.info("call %s overflowed to %s (%s)", event.call_id, decision.queue, decision.why)
            self.window(decision.queue).arrival(_epoch(now))
            # The IVR's own "please hold" has just played: the first announcement comes a period later.
            self._announced.setdefault(event.call_id, now)
            self._mine.add(event.call_id)
            self.dispatch()

    def on_agent_state(self, event: AgentStateChanged) -> None:
        if event.state == AgentState.AVAILABLE.value:
            self.dispatch()

    def on_answered(self, event: AgentAnswered) -> None:
        now = self.clock()
        with self._lock:
            with session_scope(self.sessions) as session:
                segment = reservations.answered(session, event.call_id, event.agent_id, now=now)
                if segment is None:
                    segment = self._late_answer(session, event, now)
                if segment is None:
                    log.warning("agent %s answered call %s with no offer to answer", event.agent_id, event.call_id)
                    return
                # A warm transfer's consulted agent answering starts the consultation: the caller stays
                # on hold until the first agent completes (or returns) it.
                transfers.on_answered(session, event.call_id, event.agent_id, now=now)
                entry = session.scalars(select(QueueEntry).where(QueueEntry.call_id == event.call_id)).first()
                queue, enqueued = (entry.queue, entry.enqueued_at) if entry is not None else (None, None)
                dialling = entry is not None and entry.status == "dialling"
                attempt = entry.callback_attempts if entry is not None else 0
                # An attempt its agent ended is given back, so "attempt 1" can come again: measured once.
                first_dialling = attempt == 1 and reservations.agent_ended_in_row(session, event.call_id) == 0
            # A callback's wait is measured once, when its customer is first dialled.
            if queue is not None and enqueued is not None and (not dialling or first_dialling):
                self.window(queue).left_queue(_epoch(now), (now - enqueued).total_seconds(), abandoned=False)
            self.estimate_errors.answered(event.call_id, _epoch(now))
            self._forget(event.call_id)
        self.bus.publish(AgentStateChanged(event.agent_id, AgentState.ON_CALL.value, at=now))
        if dialling:
            self.bus.publish(
                CallbackProgress(
                    event.call_id, event.agent_id, "dialling", attempt, self.config.callback_max_attempts, at=now
                )
            )

    def on_callback_answered(self, event: CallbackAnswered) -> None:
        """The customer picked up: from now on an ordinary connected call (CallHungUp ends it)."""
        now = self.clock()
        with self._lock, session_scope(self.sessions) as session:
            segment = reservations.callback_connected(session, event.call_id, event.agent_id, now=now)
            entry = session.scalars(select(QueueEntry).where(QueueEntry.call_id == event.call_id)).first()
            attempt = entry.callback_attempts if entry is not None else 0
        if segment is None:
            log.warning("call %s: callback answered with no attempt being dialled", event.call_id)
            return
        log.info("call %s: callback attempt %s connected to agent %s", event.call_id, attempt, event.agent_id)
        self.bus.publish(
            CallbackProgress(
                event.call_id, event.agent_id, "connected", attempt, self.config.callback_max_attempts, at=now
            )
        )

    def on_callback_unanswered(self, event: CallbackUnanswered) -> None:
        """The customer did not answer: the agent wraps up; the callback retries later from its place,
        or is given up after the last attempt (outcome ``callback_failed``, shown to supervisors)."""
        now = self.clock()
        with self._lock:
            with session_scope(self.sessions) as session:
                attempt = reservations.callback_unanswered(
                    session,
                    event.call_id,
                    event.agent_id,
                    now=now,
                    retry_seconds=self.config.callback_retry_seconds,
                    max_attempts=self.config.callback_max_attempts,
                    reason=event.reason,
                )
            if attempt is None:
                log.warning("call %s: callback unanswered with no attempt being dialled", event.call_id)
                return
            log.info(
                "call %s: callback attempt %s unanswered (%s): %s",
                event.call_id,
                attempt.attempts,
                attempt.reason,
                attempt.result,
            )
            if attempt.agent_to_wrap_up:
                self.bus.publish(AgentStateChanged(event.agent_id, AgentState.WRAP_UP.value, at=now))
            self.bus.publish(
                CallbackProgress(
                    event.call_id,
                    event.agent_id,
                    attempt.result,
                    attempt.attempts,
                    self.config.callback_max_attempts,
                    reason=attempt.reason,
                    retry_at=attempt.retry_at,
                    at=now,
                )
            )
            if attempt.result == reservations.GIVEN_UP:
                self.bus.publish(CallEnded(event.call_id, outcome="callback_failed", at_step="callback"))
            self.dispatch()

    def _late_answer(self, session: Session, event: AgentAnswered, now: datetime) -> CallSegment | None:
        """The phone was answered just after its reservation expired. If the call is still waiting
        (nobody else is ringing for it) and the agent is free, let the answer stand: reserve again
        atomically and answer. Otherwise the answer is refused (None)."""
        offer = reservations.reserve(
            session,
            event.call_id,
            event.agent_id,
            now=now,
            policy=self.config.policy,
            why={"rules": ["late answer after the offer timed out"], "agent_id": event.agent_id},
            owner=self.owner,
        )
        if offer is None:
            return None
        log.info("agent %s answered call %s late; accepted", event.agent_id, event.call_id)
        return reservations.answered(session, event.call_id, event.agent_id, now=now)

    def on_no_answer(self, event: AgentNoAnswer) -> None:
        self._missed(event.call_id, event.agent_id, "no_answer")

    def on_hung_up(self, event: CallHungUp) -> None:
        now = self.clock()
        published: list[object] = []
        with self._lock:
            with session_scope(self.sessions) as session:
                entry = session.scalars(select(QueueEntry).where(QueueEntry.call_id == event.call_id)).first()
                if entry is None:
                    return  # never reached a queue: the IVR service owns it
                dialling_agent = self._dialling_agent(session, entry)
            if dialling_agent is not None:
                # The contract says a backend reports an unanswered callback as CallbackUnanswered, never
                # CallHungUp; should one do so anyway, the attempt is not closed as a finished call.
                log.warning("call %s: hang-up while its callback was dialled; counted as failed", event.call_id)
                self.on_callback_unanswered(CallbackUnanswered(event.call_id, agent_id=dialling_agent, reason="failed"))
                return
            with session_scope(self.sessions) as session:
                entry = session.scalars(select(QueueEntry).where(QueueEntry.call_id == event.call_id)).first()
                if entry is None:
                    return
                was_waiting = entry.status in ("waiting", "offered")
                cancelled = reservations.cancel_call(session, event.call_id, now=now)
                queue, enqueued = entry.queue, entry.enqueued_at
                if cancelled.agent_id is not None:
                    published.append(AgentStateChanged(cancelled.agent_id, AgentState.AVAILABLE.value, at=now))
                handled = self._end_connected(session, event, now, published)
                if not handled and not was_waiting:
                    handled = self._closed_by_console(session, event.call_id)
                if was_waiting and not cancelled.kept_for_callback:
                    call = session.get(Call, event.call_id)
                    if call is not None and call.state != CallState.ENDED.value:
                        call.state, call.ended_at, call.outcome = CallState.ENDED.value, now, "abandoned"
                        published.append(CallEnded(event.call_id, outcome="abandoned", at_step="queue"))
                elif not was_waiting:
                    reservations.finish(session, event.call_id, now=now)
            window = self.window(queue)
            if was_waiting and not cancelled.kept_for_callback:
                window.left_queue(_epoch(now), (now - enqueued).total_seconds(), abandoned=True)
                self.estimate_errors.abandoned(event.call_id)
            for seconds in handled:
                window.handled(_epoch(now), seconds)
            if not cancelled.kept_for_callback:
                self._forget(event.call_id)
            self._mine.discard(event.call_id)  # the live leg is gone (a callback is anyone's now)
        for item in published:
            self.bus.publish(item)
        self.dispatch()

    def on_callback_requested(self, event: CallbackRequested) -> None:
        """A callback chosen in the IVR (menu or after hours) takes a place in its queue from now; one
        chosen while queued (``keep_place``) already has its place (:meth:`on_digits`)."""
        if event.keep_place:
            return
        if not event.number.strip():
            log.warning("call %s: callback requested without a number to call; not queued", event.call_id)
            return
        now = self.clock()
        with self._lock:
            with session_scope(self.sessions) as session:
                call = session.get(Call, event.call_id)
                queue = session.scalars(select(Queue).where(Queue.name == event.queue)).first()
                required = queue_requirements(queue.required_skills if queue is not None else [])
                reservations.enqueue(
                    session,
                    event.call_id,
                    event.queue,
                    now=now,
                    required_skills=required,
                    priority=call.priority if call is not None else 0,
                    language=call.language if call is not None and call.language else "en",
                    reason=call.reason if call is not None else "",
                    customer_id=call.customer_id if call is not None else None,
                    preferred_agent_id=self._preferred_agent(session, call),
                )
                if call is not None and call.queue_id is None and queue is not None:
                    call.queue_id, call.queued_at = queue.id, call.queued_at or now
                queued = reservations.request_callback(session, event.call_id, event.number, now=now)
            if queued:
                log.info("call %s: callback from the IVR queued in %s", event.call_id, event.queue)
                self.dispatch()

    @staticmethod
    def _dialling_agent(session: Session, entry: QueueEntry) -> int | None:
        """The agent whose callback leg is dialling this entry's customer, if it is being dialled."""
        if entry.status != "dialling":
            return None
        return session.scalar(
            select(CallSegment.agent_id)
            .where(CallSegment.call_id == entry.call_id, CallSegment.ended_at.is_(None))
            .order_by(CallSegment.id.desc())
            .limit(1)
        )

    def on_digits(self, event: DigitsReceived) -> None:
        if event.call_id not in self._callback_offered:
            return
        now = self.clock()
        with self._lock:
            with session_scope(self.sessions) as session:
                entry = session.scalars(select(QueueEntry).where(QueueEntry.call_id == event.call_id)).first()
                call = session.get(Call, event.call_id)
                if entry is None or call is None or self.rules(entry.queue).callback_key not in event.digits:
                    return
                if not reservations.request_callback(session, event.call_id, call.caller_id, now=now):
                    return
                queue = entry.queue
                if call.state in (CallState.QUEUED.value, CallState.OFFERING.value):
                    call.state, call.ended_at, call.outcome = CallState.ENDED.value, now, "callback"
            self._callback_offered.discard(event.call_id)
            log.info("call %s chose a callback and keeps its place", event.call_id)
            self.bus.publish(CallbackRequested(event.call_id, number=call.caller_id, queue=queue, keep_place=True))
            prompt = Prompt("queue_callback_ok", qx.QUEUE_PROMPTS["queue_callback_ok"])
            self.backend.perform(event.call_id, Hangup(prompts=(prompt,), reason="callback"))

    # -- periodic work ---------------------------------------------------------------------------

    def tick(self) -> None:
        now = self.clock()
        with self._lock:
            with session_scope(self.sessions) as session:
                misses = reservations.expire_overdue(
                    session,
                    now=now,
                    policy=self.config.policy,
                    callbacks_dialled=can_call_back(self.backend),
                    callback_retry_seconds=self.config.callback_retry_seconds,
                )
                for miss in misses:
                    self._keep_consulting_caller(session, miss)
                    self._requeue_after_handover(session, miss, now)
            for miss in misses:
                if miss.reason == "not_dialled":
                    log.warning(
                        "callback %s not dialled: backend %s cannot place callbacks; retry in %.0f s",
                        miss.call_id,
                        getattr(self.backend, "name", "?"),
                        self.config.callback_retry_seconds,
                    )
                else:
                    log.info("offer of call %s to agent %s timed out", miss.call_id, miss.agent_id)
                self._after_miss(miss, now)
            self.dispatch()
            self._announce(now)

    # -- dispatch --------------------------------------------------------------------------------

    def dispatch(self) -> list[reservations.Offer]:
        """Offer waiting calls to available agents; returns the offers this process won."""
        now = self.clock()
        won: list[tuple[reservations.Offer, Decision, str]] = []
        with self._lock:
            with self.sessions() as session:
                # Agents first: when nobody is free (a busy centre) the waiting calls need not be read.
                agents = self._agents(session)
                tasks = self._tasks(session, now) if agents else []
                one_transaction = session.get_bind().dialect.name == "sqlite"
                session.rollback()
            if not tasks or not agents:
                return []
            decisions = self.router.assign(tasks, agents, _epoch(now))
            # SQLite: the whole round in one transaction (one hand-over of its single write lock);
            # elsewhere one reservation per transaction (see reservations.reserve_many).
            rounds = [decisions] if one_transaction else [[d] for d in decisions]
            for batch in rounds:
                won += self._reserve(batch, now)
            for offer, decision, contact in won:
                self._ring(offer, contact, decision.why.summary())
        return [offer for offer, _d, _c in won]

    def _reserve(self, decisions: list[Decision], now: datetime) -> list[tuple[reservations.Offer, Decision, str]]:
        won: list[tuple[reservations.Offer, Decision, str]] = []
        try:
            with session_scope(self.sessions) as session:
                for decision in decisions:
                    agent_id = int(decision.agent_id)
                    why = {**decision.why.as_dict(), "summary": decision.why.summary(), "agent_id": agent_id}
                    offer = reservations.reserve(
                        session,
                        decision.call_id,
                        agent_id,
                        now=now,
                        policy=self.config.policy,
                        why=why,
                        owner=self.owner,
                    )
                    if offer is None:
                        continue
                    call = session.get(Call, decision.call_id)
                    reservations.open_offer_segment(session, offer, queue_id=call.queue_id if call else None)
                    agent = session.get(Agent, agent_id)
                    contact = (agent.sip_contact or agent.softphone) if agent is not None else ""
                    won.append((offer, decision, contact or "browser"))
            return won
        except Exception:  # the UNIQUE net caught a race, or a deadlock: nothing was reserved, next round retries
            log.warning("reservation round of %d decision(s) failed; will retry", len(decisions))
            return []

    def _ring(self, offer: reservations.Offer, contact: str, why: str, consult: bool = False) -> None:
        endpoint = AgentEndpoint(offer.agent_id, contact)
        self.bus.publish(AgentStateChanged(offer.agent_id, AgentState.RINGING.value, at=offer.offered_at))
        self.bus.publish(CallOffered(offer.call_id, offer.agent_id, why=why))
        ring = self.config.policy.ring_seconds
        if consult and can_consult(self.backend):
            self.backend.consult(offer.call_id, endpoint, ring)
        elif offer.callback_number is None:
            self.backend.connect_agent(offer.call_id, endpoint, ring)
        elif can_call_back(self.backend):
            try:
                self.backend.call_back(
                    offer.call_id, offer.callback_number, endpoint, ring, self.config.callback_ring_seconds
                )
            except Exception as exc:  # e.g. no outbound route configured: not the agent's miss, not lost
                # The exception text may carry the dialled URI (customer data): log its type only.
                log.warning("callback %s: backend could not start it (%s)", offer.call_id, type(exc).__name__)
                self._not_dialled(offer)
        else:
            # No dialler in the backend (see routing.callbacks.CallbackDue): say so, do not drop it.
            log.warning("callback %s due but backend %s cannot dial", offer.call_id, getattr(self.backend, "name", "?"))
            self.bus.publish(CallbackDue(offer.call_id, agent_id=offer.agent_id, number=offer.callback_number))

    def _not_dialled(self, offer: reservations.Offer) -> None:
        """Release the agent at once and let the callback wait ``callback_retry_seconds`` in its place."""
        now = self.clock()
        with session_scope(self.sessions) as session:
            miss = reservations.callback_not_dialled(
                session, offer.call_id, offer.agent_id, now=now, retry_seconds=self.config.callback_retry_seconds
            )
        if miss is not None:
            self.bus.publish(AgentStateChanged(offer.agent_id, AgentState.AVAILABLE.value, at=now))

    def _tasks(self, session: Session, now: datetime) -> list[Task]:
        entries = [
            e
            for e in reservations.waiting_entries(session, due_at=now)
            if e.call_id in self._mine or e.callback_number is not None
        ]
        if not entries:
            return []
        missed_by: dict[str, set[str]] = {}
        for call_id, agent_id in session.execute(
            select(ReservationRow.call_id, ReservationRow.agent_id).where(
                ReservationRow.call_id.in_([e.call_id for e in entries]), ReservationRow.status == "missed"
            )
        ):
            missed_by.setdefault(call_id, set()).add(str(agent_id))
        for call_id, from_agent in session.execute(
            select(TransferRecord.call_id, TransferRecord.from_agent_id).where(
                TransferRecord.call_id.in_([e.call_id for e in entries]), TransferRecord.from_agent_id.is_not(None)
            )
        ):
            missed_by.setdefault(call_id, set()).add(str(from_agent))  # who passed it on should not get it back
        tasks = []
        for e in entries:
            try:
                required = parse_requirements(e.required_skills or [])
            except ValueError:
                log.warning("call %s: malformed skill requirements, routing without them", e.call_id)
                required = ()
            tasks.append(
                Task(
                    call_id=e.call_id,
                    queue=e.queue,
                    required_skills=required,
                    priority=e.priority,
                    language=e.language,
                    arrived_at=_epoch(e.enqueued_at),
                    reason=e.reason,
                    customer_id=str(e.customer_id) if e.customer_id is not None else None,
                    preferred_agent_id=str(e.preferred_agent_id) if e.preferred_agent_id is not None else None,
                    excluded_agents=frozenset(missed_by.get(e.call_id, ())),
                )
            )
        return tasks

    def _agents(self, session: Session, states: tuple[str, ...] = (AgentState.AVAILABLE.value,)) -> list[AgentView]:
        rows = session.scalars(
            select(Agent)
            .where(Agent.state.in_(states), Agent.active.is_(True))
            .options(selectinload(Agent.skills).selectinload(AgentSkill.skill))
        )
        return [
            AgentView(
                agent_id=str(a.id),
                skills={s.skill.name: s.proficiency for s in a.skills},
                languages=frozenset(x.strip() for x in a.languages.split(",") if x.strip()),
                state=AgentState(a.state),
                idle_since=_epoch(a.state_since),
            )
            for a in rows
        ]

    # -- helpers ---------------------------------------------------------------------------------

    def _missed(self, call_id: str, agent_id: int, reason: str) -> None:
        now = self.clock()
        with self._lock:
            with session_scope(self.sessions) as session:
                miss = reservations.missed(
                    session, call_id, agent_id, now=now, policy=self.config.policy, reason=reason
                )
                if miss is not None:
                    self._keep_consulting_caller(session, miss)
                    self._requeue_after_handover(session, miss, now)
            if miss is None:
                return
            self._after_miss(miss, now)
            self.dispatch()

    @staticmethod
    def _keep_consulting_caller(session: Session, miss: reservations.Miss) -> None:
        """A warm transfer's consulted agent did not answer: the caller is still the first agent's
        (held, waiting for Return), so their entry must not go back to the router."""
        consulting = session.scalars(
            select(TransferRecord).where(
                TransferRecord.call_id == miss.call_id,
                TransferRecord.status == "consulting",
                TransferRecord.to_agent_id == miss.agent_id,
            )
        ).first()
        if consulting is None:
            return
        entry = session.scalars(select(QueueEntry).where(QueueEntry.call_id == miss.call_id)).one_or_none()
        if entry is not None and entry.status == "waiting":
            entry.status = "connected"

    def _requeue_after_handover(self, session: Session, miss: reservations.Miss, now: datetime) -> None:
        """The consulted agent missed a consultation whose first agent had hung up: nobody has the caller,
        so they wait in their queue again at their ORIGINAL place (arrival time in the queue, skills,
        priority and language of the first wait; the warm transfer's offer had replaced them). The failed
        transfer record keeps its reason and note for whoever answers next."""
        record = transfers.handover_unanswered(session, miss.call_id, miss.agent_id, now=now)
        if record is None:
            return
        entry = session.scalars(select(QueueEntry).where(QueueEntry.call_id == miss.call_id)).one_or_none()
        call = session.get(Call, miss.call_id)
        if entry is None or call is None or call.state == CallState.ENDED.value:
            return
        if call.required_skills:
            skills = [list(pair) for pair in call.required_skills]
        else:
            queue = session.scalars(select(Queue).where(Queue.name == entry.queue)).first()
            skills = [list(pair) for pair in queue_requirements(queue.required_skills if queue is not None else [])]
        entry.status, entry.required_skills, entry.preferred_agent_id = "waiting", skills, None
        entry.enqueued_at = call.queued_at or entry.enqueued_at
        entry.priority, entry.language, entry.updated_at = call.priority, call.language or entry.language, now
        call.state = CallState.QUEUED.value
        self._announced.setdefault(miss.call_id, now)
        self._mine.add(miss.call_id)
        log.info("call %s: handover to agent %s unanswered; back in queue %s", miss.call_id, miss.agent_id, entry.queue)

    def _after_miss(self, miss: reservations.Miss, now: datetime) -> None:
        reason = reservations.NOT_READY_REASON if miss.agent_state is AgentState.NOT_READY else ""
        if miss.agent_state is AgentState.NOT_READY:
            log.info("agent %s set not ready after %s missed offers", miss.agent_id, miss.consecutive_misses)
        self.bus.publish(AgentStateChanged(miss.agent_id, miss.agent_state.value, reason, at=now))

    def _end_connected(
        self, session: Session, event: CallHungUp, now: datetime, published: list[object]
    ) -> list[float]:
        """Close the legs of an answered call (unless the console already did); agents go to wrap-up."""
        handled = []
        for seg in session.scalars(
            select(CallSegment).where(
                CallSegment.call_id == event.call_id,
                CallSegment.ended_at.is_(None),
                CallSegment.started_at.is_not(None),
            )
        ):
            assert seg.started_at is not None
            seg.ended_at, seg.end_reason = now, f"{event.by}_hung_up"
            handled.append((now - seg.started_at).total_seconds())
            agent = session.get(Agent, seg.agent_id) if seg.agent_id is not None else None
            if agent is not None and agent.state == AgentState.ON_CALL.value:
                agent.state, agent.state_since, agent.state_reason = AgentState.WRAP_UP.value, now, ""
                published.append(AgentStateChanged(agent.id, AgentState.WRAP_UP.value, at=now))
        if handled:
            call = session.get(Call, event.call_id)
            if call is not None and call.state != CallState.ENDED.value:
                call.state, call.ended_at = CallState.ENDED.value, now
                published.append(CallEnded(event.call_id, outcome=call.outcome or "completed"))
            elif call is not None and call.outcome == "callback":
                # The caller's own leg ENDED when they chose the callback; the call really ends now.
                call.ended_at = now
                published.append(CallEnded(event.call_id, outcome="callback", at_step="callback"))
        return handled

    @staticmethod
    def _closed_by_console(session: Session, call_id: str) -> list[float]:
        """The agent hung up from the console, which closed the leg before the backend reported the
        hang-up: take the handle time from that leg so the live AHT still learns from it."""
        last = session.scalars(
            select(CallSegment)
            .where(
                CallSegment.call_id == call_id,
                CallSegment.started_at.is_not(None),
                CallSegment.ended_at.is_not(None),
            )
            .order_by(CallSegment.id.desc())
        ).first()
        if last is None or last.started_at is None or last.ended_at is None:
            return []
        return [(last.ended_at - last.started_at).total_seconds()]

    def _entry_decision(self, session: Session, queue: str, now: datetime) -> qx.EntryDecision:
        rules = self.config.rules.get(queue)
        if rules is None:
            return qx.EntryDecision("accept", queue, "no rules")
        waiting = len(reservations.waiting_entries(session, queue))
        staffed = self._staffed(session, queue)
        expected = qx.expected_wait_on_arrival(staffed, self.window(queue).rates(_epoch(now)))
        return qx.decide_entry(rules, now=now, waiting=waiting, staffed_agents=staffed, expected_wait=expected)

    def _close_for_hours(
        self, session: Session, event: CallQueued, call: Call | None, decision: qx.EntryDecision, now: datetime
    ) -> Hangup:
        """After hours: keep a callback place for opening time if the caller has a number, else say closed."""
        number = call.caller_id if call is not None else ""
        if decision.after_hours == "callback" and number:
            reservations.enqueue(
                session,
                event.call_id,
                event.queue,
                now=now,
                required_skills=event.required_skills,
                priority=event.priority,
                language=event.language,
            )
            reservations.request_callback(session, event.call_id, number, now=now)
            if call is not None:
                call.state, call.ended_at, call.outcome = CallState.ENDED.value, now, "callback"
            return Hangup(
                prompts=(Prompt("queue_callback_ok", qx.QUEUE_PROMPTS["queue_callback_ok"]),), reason="callback"
            )
        if call is not None:
            call.state, call.ended_at, call.outcome = CallState.ENDED.value, now, "closed"
        return Hangup(prompts=(Prompt("queue_closed", qx.QUEUE_PROMPTS["queue_closed"]),), reason="closed")

    def _staffed(self, session: Session, queue: str) -> int:
        """Logged-in, ready agents who meet the queue's hard requirements (busy ones included)."""
        q = session.scalars(select(Queue).where(Queue.name == queue)).first()
        required = queue_requirements(q.required_skills if q is not None else [])
        working = (
            AgentState.AVAILABLE.value,
            AgentState.RINGING.value,
            AgentState.ON_CALL.value,
            AgentState.WRAP_UP.value,
        )
        return sum(1 for a in self._agents(session, working) if check_requirements(a.skills, required, None) > 0)

    def _preferred_agent(self, session: Session, call: Call | None) -> int | None:
        """The agent who last served this customer for the same reason (the router waits briefly for them)."""
        if call is None or call.customer_id is None:
            return None
        return session.scalar(
            select(CallSegment.agent_id)
            .join(Call, Call.id == CallSegment.call_id)
            .where(
                Call.customer_id == call.customer_id,
                Call.id != call.id,
                Call.reason == call.reason,
                CallSegment.started_at.is_not(None),
            )
            .order_by(CallSegment.started_at.desc())
            .limit(1)
        )

    def _announce(self, now: datetime, only: str | None = None) -> None:
        """Position (always), wait (when reliable) and the callback offer, every ``announce_every`` s."""
        plans: list[tuple[str, qx.Announcement, float]] = []
        with self.sessions() as session:
            entries = [
                e
                for e in reservations.waiting_entries(session)
                if e.callback_number is None and e.call_id in self._mine
            ]
            if only is not None:
                entries = [e for e in entries if e.call_id == only]
            staffed_by_queue: dict[str, int] = {}
            for entry in entries:
                rules = self.rules(entry.queue)
                if not qx.due(self._announced.get(entry.call_id), now, rules.announce_every):
                    continue
                position = reservations.position(session, entry.call_id)
                if not position:
                    continue
                call = session.get(Call, entry.call_id)
                if entry.queue not in staffed_by_queue:
                    staffed_by_queue[entry.queue] = self._staffed(session, entry.queue)
                staffed = staffed_by_queue[entry.queue]
                estimate = qx.estimate_wait(
                    position, staffed, self.window(entry.queue).rates(_epoch(now)), self.config.estimates
                )
                said = qx.announcement(
                    position, estimate, rules, callback_allowed=bool(call is not None and call.caller_id)
                )
                self.estimate_errors.predicted(entry.call_id, _epoch(now), estimate)
                self._announced[entry.call_id] = now
                plans.append((entry.call_id, said, rules.announce_every))
            session.rollback()
        for call_id, said, every in plans:
            prompts = tuple(Prompt(pid, text) for pid, text in zip(said.prompt_ids, said.texts))
            if said.offers_callback:
                self._callback_offered.add(call_id)
            # A Gather while queued = play over the hold music and listen for one key.
            self.backend.perform(
                call_id, Gather(prompts=prompts, max_digits=1, min_digits=1, timeout_seconds=min(every, 10.0))
            )

    def _forget(self, call_id: str) -> None:
        self._announced.pop(call_id, None)
        self._callback_offered.discard(call_id)

    # -- transfers (what the console's transfer button calls) --------------------------------------

    def transfer(self, request: transfers.TransferRequest) -> TransferRecord:
        """Start a transfer: the database side in one transaction, then the phones. A refused transfer
        raises :class:`routing.transfers.TransferError` and changes nothing."""
        now = self.clock()
        with self._lock:
            with session_scope(self.sessions) as session:
                record, offer = transfers.start(session, request, now=now, policy=self.config.policy)
                contact = ""
                if offer is not None:
                    agent = session.get(Agent, offer.agent_id)
                    contact = (agent.sip_contact or agent.softphone) if agent is not None else ""
                context = self._context(session, request.call_id) if record.target_type == "number" else None
            self.bus.publish(
                CallTransferred(
                    request.call_id,
                    request.from_agent_id,
                    record.kind,
                    f"{record.target_type}:{record.target}",
                    record.reason,
                    record.note,
                )
            )
            consult = record.kind == "warm" and can_consult(self.backend)
            if record.kind == "warm" and not consult:
                self.backend.hold(request.call_id, True)
            if offer is not None:
                self._ring(offer, contact or "browser", f"{record.kind} transfer: {record.reason}", consult=consult)
            elif context is not None:
                self.backend.perform(request.call_id, Transfer(number=record.target, context=context))
            elif record.target_type == "queue":
                self._mine.add(request.call_id)
                self.dispatch()
        return record

    def complete_warm(self, transfer_id: int) -> None:
        with self._lock, session_scope(self.sessions) as session:
            record = transfers.complete_warm(session, transfer_id, now=self.clock())
            call_id = record.call_id
        if can_consult(self.backend):
            self.backend.complete_consult(call_id)  # caller ↔ consulted agent; the first agent's leg ends
        else:
            self.backend.hold(call_id, False)

    def on_handed_over(self, event: ConsultHandedOver) -> None:
        """The first agent hung up during the consultation and the backend kept the caller for the
        consulted agent (:class:`ConsultHandedOver`). Recorded with the same code as :meth:`complete_warm`
        (``transfers.hand_over``); the agents' screens get the states the console's Complete button pushes."""
        now = self.clock()
        published: list[object] = []
        with self._lock, session_scope(self.sessions) as session:
            record = transfers.hand_over(session, event.call_id, event.from_agent_id, now=now)
            if record is None:
                return  # already recorded (the consulted agent's answer completed a pending handover)
            log.info(
                "call %s: agent %s hung up while consulting; handed over to agent %s (%s)",
                event.call_id,
                event.from_agent_id,
                record.to_agent_id,
                "answered" if record.status == "completed" else "still ringing",
            )
            for agent_id in (record.from_agent_id, record.to_agent_id if record.status == "completed" else None):
                agent = session.get(Agent, agent_id) if agent_id is not None else None
                if agent is not None:
                    published.append(AgentStateChanged(agent.id, agent.state, at=agent.state_since))
        for item in published:
            self.bus.publish(item)

    def return_warm(self, transfer_id: int) -> None:
        with self._lock, session_scope(self.sessions) as session:
            record = transfers.return_warm(session, transfer_id, now=self.clock())
            call_id = record.call_id
        if can_consult(self.backend):
            self.backend.cancel_consult(call_id)  # the consulted leg ends; caller ↔ first agent again
        else:
            self.backend.hold(call_id, False)

    @staticmethod
    def _context(session: Session, call_id: str) -> CallContext:
        items = session.scalars(
            select(CallContextItem).where(CallContextItem.call_id == call_id).order_by(CallContextItem.id)
        )
        return CallContext(
            call_id, tuple(ContextItem(i.key, i.value, i.step, i.verified, i.sensitive, i.collected_at) for i in items)
        )


def wait_estimate_summary(dispatcher: Dispatcher) -> dict[str, Any]:
    """How good the announced waits were (for the wallboard / metrics)."""
    return {
        "reliable": dispatcher.estimate_errors.summary(True),
        "not_announced": dispatcher.estimate_errors.summary(False),
        "windows": {
            q: {
                k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                for k, v in vars(w.rates(_epoch(dispatcher.clock()))).items()
            }
            for q, w in dispatcher.windows.items()
        },
    }
