"""Simulated callers and simulated agents for ``callcentre demo`` (and nothing else).

* :class:`SimulatedCallers` places calls on the in-memory backend at random (Poisson) times and
  answers the IVR like a person would: account number and PIN when asked, a menu choice, and
  sometimes hangs up after waiting too long in the queue. When the platform calls one back (the
  memory backend's simulated ``call_back``), the customer picks up after a few seconds — or, now and
  then, is busy or does not answer, so the console shows retries too.
* :class:`SimulatedAgents` are the agents nobody is logged in as: when a call is offered to one of
  them they answer after a few rings, talk, hang up, wrap up with a disposition and a note, and
  become available again, all through :class:`~agent_console.actions.ConsoleActions`, the same
  adapter the browser uses.

Both are bounded: a maximum number of calls and a stop event; every timer runs on one scheduler
thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from agent_console.actions import ActionError, ConsoleActions, TransferRequest
from callcentre.bus import EventBus
from callcentre.domain.events import AgentAnswered, CallEnded, CallHungUp, CallOffered
from ivr.actions import TERMINAL_ACTIONS, Gather

log = logging.getLogger(__name__)

NOTES = {
    "billing": [
        "Explained the new tariff; customer happy.",
        "Refunded the duplicate charge.",
        "Set up monthly direct debit.",
        "Corrected the billing address.",
    ],
    "technical": [
        "Router restarted remotely; line back up.",
        "Booked an engineer visit.",
        "Walked through Wi-Fi channel change; speed fine now.",
        "Replaced the faulty set-top box.",
    ],
    "sales": ["Upgraded to fibre 500.", "Added the TV sports pack.", "Sent a quote by email."],
    "": ["Answered a general question.", "Updated contact details."],
}


class Scheduler:
    """One thread running callbacks at their due times (no thread per timer)."""

    def __init__(self, stop: threading.Event) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._stop = stop
        self._thread = threading.Thread(target=self._run, name="demo-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def after(self, seconds: float, fn: Callable[[], None]) -> None:
        with self._cv:
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._seq), fn))
            self._cv.notify()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cv:
                if not self._heap:
                    self._cv.wait(0.2)
                    continue
                due, _, fn = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cv.wait(min(wait, 0.2))
                    continue
                heapq.heappop(self._heap)
            try:
                fn()
            except Exception:
                log.exception("demo task failed")

    def join(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        self._thread.join(timeout=5)


class SimulatedCallers:
    def __init__(
        self,
        backend: Any,
        bus: EventBus,
        scheduler: Scheduler,
        customers: list[dict[str, Any]],
        *,
        per_minute: float,
        max_calls: int,
        seed: int = 1,
    ) -> None:
        self.backend = backend
        self.scheduler = scheduler
        self.customers = customers
        self.rate = per_minute / 60.0
        self.max_calls = max_calls
        self.rng = random.Random(seed)
        self.placed = 0
        self.answered: set[str] = set()
        self.ended: set[str] = set()
        bus.subscribe(AgentAnswered, self._agent_answered)
        bus.subscribe(CallHungUp, lambda e: self.ended.add(e.call_id))
        bus.subscribe(CallEnded, lambda e: self.ended.add(e.call_id))

    def _agent_answered(self, event: AgentAnswered) -> None:
        self.answered.add(event.call_id)
        call = self.backend.calls.get(event.call_id)
        if call is not None and call.callback_phase == "customer":  # a callback: the customer's phone rings
            self.scheduler.after(self.rng.uniform(2, 6), lambda: self._customer_picks_up(event.call_id))

    def _customer_picks_up(self, call_id: str) -> None:
        try:
            if self.rng.random() < 0.7:
                self.backend.customer_answers(call_id)
            else:
                self.backend.customer_unavailable(call_id, self.rng.choice(["busy", "no-answer"]))
        except ValueError:
            pass  # the attempt ended some other way meanwhile

    def start(self) -> None:
        # A few callers at once so the queues are not empty when the newcomer first looks.
        for i in range(3):
            self.scheduler.after(0.5 + i, self._call)
        self.scheduler.after(self.rng.expovariate(self.rate), self._next)

    def _next(self) -> None:
        if self.placed >= self.max_calls:
            return
        self._call()
        self.scheduler.after(self.rng.expovariate(self.rate), self._next)

    def _call(self) -> None:
        if self.placed >= self.max_calls:
            return
        self.placed += 1
        known = self.rng.random() < 0.8
        who = self.rng.choice(self.customers) if known else None
        caller_id = who["phone"] if who else f"+1555999{self.rng.randrange(10000):04d}"
        call_id = self.backend.place_call(caller_id)
        self._answer_ivr(call_id, who)
        patience = self.rng.uniform(45, 150)
        self.scheduler.after(patience, lambda: self._maybe_abandon(call_id))

    def _answer_ivr(self, call_id: str, who: dict[str, Any] | None) -> None:
        for _ in range(8):
            if call_id in self.ended or not self.backend.performed.get(call_id):
                return
            action = self.backend.last_action(call_id)
            if isinstance(action, TERMINAL_ACTIONS) or not isinstance(action, Gather):
                return
            ids = {p.id for p in action.prompts}
            if "enter_account" in ids:
                self.backend.press(call_id, (who["account_number"] if who else "99999999") + "#")
            elif "enter_pin" in ids:
                self.backend.press(call_id, who["pin"] if who else "0000")
            else:
                self.backend.press(call_id, self.rng.choices(["1", "2", "3"], weights=[5, 4, 2])[0])

    def _maybe_abandon(self, call_id: str) -> None:
        if call_id not in self.answered and call_id not in self.ended:
            self.backend.caller_hangs_up(call_id)


class SimulatedAgents:
    def __init__(
        self,
        actions: ConsoleActions,
        bus: EventBus,
        scheduler: Scheduler,
        agent_ids: set[int],
        *,
        backend: Any,
        seed: int = 2,
    ) -> None:
        self.actions = actions
        self.backend = backend
        self.scheduler = scheduler
        self.agent_ids = agent_ids
        self.rng = random.Random(seed)
        self.handled = 0
        bus.subscribe(CallOffered, self._offered)

    def _offered(self, event: CallOffered) -> None:
        if event.agent_id in self.agent_ids:
            agent_id, call_id = event.agent_id, event.call_id
            self.scheduler.after(self.rng.uniform(1.5, 5), lambda: self._answer(agent_id, call_id))

    def _answer(self, agent_id: int, call_id: str) -> None:
        try:
            self.actions.answer(agent_id, call_id)
        except ActionError:
            return  # the caller gave up or the offer moved on
        if self.rng.random() < 0.12:
            self.scheduler.after(self.rng.uniform(8, 20), lambda: self._transfer(agent_id, call_id))
        else:
            self.scheduler.after(self.rng.uniform(12, 45), lambda: self._hang_up(agent_id, call_id))

    def _transfer(self, agent_id: int, call_id: str) -> None:
        """Now and then a call needs another team: back to the general queue with a note."""
        request = TransferRequest(
            "blind",
            "queue",
            "general",
            "needs another team",
            "Simulated: caller asked about something outside this queue.",
        )
        try:
            self.actions.transfer(agent_id, call_id, request)
        except ActionError:
            self._hang_up(agent_id, call_id)
            return
        self.scheduler.after(self.rng.uniform(3, 8), lambda: self._wrap_up(agent_id, call_id))

    def _hang_up(self, agent_id: int, call_id: str) -> None:
        try:
            self.actions.hangup(agent_id, call_id)
        except ActionError:
            pass  # the caller hung up first; the agent is in wrap-up either way
        self.scheduler.after(self.rng.uniform(3, 10), lambda: self._wrap_up(agent_id, call_id))

    def _wrap_up(self, agent_id: int, call_id: str) -> None:
        with self.actions.session_factory() as db:
            from callcentre.db.models import Call

            call = db.get(Call, call_id)
            reason = call.reason if call is not None else ""
        resolved = self.rng.random() < 0.75
        code = self.rng.choice(["resolved", "info_given"]) if resolved else self.rng.choice(["follow_up", "escalated"])
        note = self.rng.choice(NOTES.get(reason, NOTES[""]))
        try:
            self.actions.wrap_up(agent_id, call_id, code, resolved, note)
            self.handled += 1
        except ActionError as exc:
            log.info("simulated agent %s could not wrap up call %s: %s", agent_id, call_id, exc.message)
            try:
                self.actions.set_state(agent_id, "available")
            except ActionError:
                pass
