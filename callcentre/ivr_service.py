"""Runs the IVR engine for every live call: bus events in, backend actions out, context saved.

This is the adapter between the pure engine and the rest of the platform. It owns the ``calls``
row while the caller is in the IVR: created on ``CallArrived``, each collected item saved as it is
collected (so a caller who hangs up mid-IVR leaves what they told us), and on a terminal action the
call is queued (``CallQueued``), handed to a callback (``CallbackRequested``) or ended.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from callcentre.bus import EventBus
from callcentre.caller_input import CALLER_INPUT_EVENTS, CallerInputEvent, ivr_input
from callcentre.db.base import utcnow
from callcentre.db.models import Call, CallContextItem, Queue
from callcentre.db.session import session_scope
from callcentre.domain.call_state import CallState, check_transition
from callcentre.domain.context import CallContext
from callcentre.domain.events import (
    CallArrived,
    CallbackRequested,
    CallEnded,
    CallHungUp,
    CallQueued,
)
from ivr.actions import Action, Enqueue, Hangup, RequestCallback, Transfer
from ivr.engine import IvrEngine
from ivr.state import CallInfo, IvrInput, IvrState
from telephony.base import TelephonyBackend

log = logging.getLogger(__name__)


def mask(value: str) -> str:
    """Sensitive digits are stored with all but the last two hidden."""
    return "*" * max(len(value) - 2, 0) + value[-2:] if len(value) > 2 else "*" * len(value)


class IvrService:
    def __init__(
        self,
        bus: EventBus,
        backend: TelephonyBackend,
        engine: IvrEngine,
        session_factory: sessionmaker[Session],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.bus = bus
        self.backend = backend
        self.engine = engine
        self.sessions = session_factory
        self.clock = clock
        self._states: dict[str, IvrState] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        bus.subscribe(CallArrived, self.on_arrived)
        for kind in CALLER_INPUT_EVENTS:
            bus.subscribe(kind, self.on_input)
        bus.subscribe(CallHungUp, self.on_hung_up)

    # -- queries --------------------------------------------------------------------------------

    def state_of(self, call_id: str) -> IvrState | None:
        return self._states.get(call_id)

    def active_calls(self) -> list[str]:
        with self._guard:
            return list(self._states)

    def adopt(self, call_id: str, state: IvrState) -> None:
        """Continue from a state saved elsewhere (stateless backends: the next Twilio webhook may reach
        another worker process). The saved state wins over any copy this process still holds."""
        with self._guard:
            self._states[call_id] = state
            self._locks.setdefault(call_id, threading.Lock())

    # -- event handlers -------------------------------------------------------------------------

    def on_arrived(self, event: CallArrived) -> None:
        with self._guard:
            if event.call_id in self._states:
                return  # a backend retry of the same arrival: already handled
            self._locks[event.call_id] = threading.Lock()
        with self._lock(event.call_id), session_scope(self.sessions) as session:
            call = Call(id=event.call_id, backend=event.backend, backend_ref=event.backend_ref,
                        caller_id=event.caller_id, dialled_number=event.dialled, state=CallState.NEW.value,
                        arrived_at=event.at)
            call.state = check_transition(call.id, call.state, CallState.IVR).value
            session.add(call)
            session.flush()
            state, action = self.engine.start(CallInfo(event.call_id, event.caller_id, event.dialled, event.at))
            after = self._settle(session, call, state, action)
        self._deliver(event.call_id, action, after)

    def on_input(self, event: CallerInputEvent) -> None:
        self._input(event.call_id, ivr_input(event))

    def on_hung_up(self, event: CallHungUp) -> None:
        """A caller who hangs up in the IVR abandoned there; keep what they told us."""
        lock = self._locks.get(event.call_id)
        if lock is None:
            return
        with lock:
            state = self._states.pop(event.call_id, None)
            if state is None:
                return
            with session_scope(self.sessions) as session:
                call = session.get(Call, event.call_id)
                if call is not None and call.state == CallState.IVR.value:
                    call.state = check_transition(call.id, call.state, CallState.ENDED).value
                    call.ended_at = event.at
                    call.outcome = "abandoned"
                    call.ended_at_step = state.step
                    self._save_context(session, call.id, state.context)
        self._forget(event.call_id)
        self.bus.publish(CallEnded(event.call_id, outcome="abandoned", at_step=state.step))

    # -- internals ------------------------------------------------------------------------------

    def _lock(self, call_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(call_id, threading.Lock())

    def _input(self, call_id: str, inp: IvrInput) -> None:
        lock = self._locks.get(call_id)
        if lock is None:
            # Normal after the IVR (survey digits, agent keypad): other services handle those.
            log.debug("input for call %s which is not in the IVR; ignored", call_id)
            return
        with lock:
            state = self._states.get(call_id)
            if state is None:
                return
            state, action = self.engine.step(state, inp)
            with session_scope(self.sessions) as session:
                call = session.get(Call, call_id)
                if call is None:
                    log.error("call %s vanished from the database during the IVR", call_id)
                    return
                after = self._settle(session, call, state, action)
        self._deliver(call_id, action, after)

    def _deliver(self, call_id: str, action: Action, after: list[object]) -> None:
        """The caller hears the action's prompts before anyone downstream (the router) acts on it."""
        self.backend.perform(call_id, action)
        for event in after:
            self.bus.publish(event)

    def _settle(self, session: Session, call: Call, state: IvrState, action: Action) -> list[object]:
        """Save what was collected; if the IVR is over, update the call. Returns events to publish."""
        self._save_context(session, call.id, state.context)
        if not state.finished:
            self._states[call.id] = state
            return []
        self._states.pop(call.id, None)
        after: list[object] = []
        now = self.clock()
        customer = state.context.get("customer_id")
        call.customer_id = int(customer) if customer else None
        call.reason = state.context.get("reason") or ""
        call.language = state.language
        if isinstance(action, Enqueue):
            call.state = check_transition(call.id, call.state, CallState.QUEUED).value
            call.queued_at = now
            call.queue_id = session.scalar(select(Queue.id).where(Queue.name == action.queue))
            call.required_skills = [list(s) for s in action.required_skills]
            call.priority = action.priority
            call.unidentified = action.unidentified
            after.append(CallQueued(call.id, queue=action.queue, required_skills=action.required_skills,
                                    priority=action.priority, language=action.language))
        elif isinstance(action, RequestCallback):
            call.state = check_transition(call.id, call.state, CallState.ENDED).value
            call.ended_at, call.outcome, call.ended_at_step = now, "callback", state.step
            after.append(CallbackRequested(call.id, number=action.number, queue=action.queue))
            after.append(CallEnded(call.id, outcome="callback", at_step=state.step))
        elif isinstance(action, Transfer):
            call.state = check_transition(call.id, call.state, CallState.TRANSFERRING).value
            call.outcome = "transferred_out"
        elif isinstance(action, Hangup):
            call.state = check_transition(call.id, call.state, CallState.ENDED).value
            call.ended_at, call.outcome, call.ended_at_step = now, action.reason, state.step
            after.append(CallEnded(call.id, outcome=action.reason, at_step=state.step))
        session.flush()
        self._forget(call.id)
        return after

    def _save_context(self, session: Session, call_id: str, context: CallContext) -> None:
        saved = {row.key: row for row in session.scalars(
            select(CallContextItem).where(CallContextItem.call_id == call_id))}
        for item in context.items:
            value = mask(item.value) if item.sensitive else item.value
            row = saved.get(item.key)
            if row is None:
                session.add(CallContextItem(call_id=call_id, key=item.key, value=value, step=item.step,
                                            verified=item.verified, sensitive=item.sensitive,
                                            collected_at=item.at or self.clock()))
            elif (row.value, row.verified, row.step) != (value, item.verified, item.step):
                row.value, row.verified, row.step = value, item.verified, item.step

    def _forget(self, call_id: str) -> None:
        with self._guard:
            if call_id not in self._states:
                self._locks.pop(call_id, None)
