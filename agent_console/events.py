"""Live push to browsers over Server-Sent Events: one channel per agent plus one for supervisors.

Bus handlers only enqueue small messages (they run in the publisher's thread and must be quick);
the SSE response generator of each connected browser drains its own queue, and builds the screen
pop for an ``offer`` in its own request thread, so 50 consoles assemble 50 screen pops in parallel.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, stream_with_context

from agent_console.auth import roles_required, user
from agent_console.context import get_console
from callcentre.bus import EventBus
from callcentre.domain.events import (
    AgentAnswered,
    AgentNoAnswer,
    AgentStateChanged,
    CallEnded,
    CallHungUp,
    CallOffered,
    CallQueued,
    CallTransferred,
)
from routing.callbacks import CallbackDue, CallbackProgress, label

log = logging.getLogger(__name__)
bp = Blueprint("events", __name__, url_prefix="/events")

HEARTBEAT_SECONDS = 15.0
MAX_PENDING = 500
_CLOSE = {"type": "__close__"}


@dataclass(eq=False)
class Subscriber:
    """One connected browser tab."""

    agent_id: int
    supervisor: bool
    messages: queue.Queue[dict[str, Any]] = field(default_factory=lambda: queue.Queue(MAX_PENDING))
    dropped: int = 0

    def put(self, message: dict[str, Any]) -> None:
        try:
            self.messages.put_nowait(message)
        except queue.Full:
            # A stalled tab must not grow memory without bound; it reloads state on reconnect.
            self.dropped += 1


class PushHub:
    """Routes domain events to the browsers that should see them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._agents: dict[int, set[Subscriber]] = {}
        self._supervisors: set[Subscriber] = set()
        self._call_agents: dict[str, set[int]] = {}
        self.closed = False

    # -- connections ---------------------------------------------------------------------------
    def subscribe(self, agent_id: int, *, supervisor: bool) -> Subscriber:
        sub = Subscriber(agent_id, supervisor)
        with self._lock:
            if supervisor:
                self._supervisors.add(sub)
            self._agents.setdefault(agent_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._supervisors.discard(sub)
            subs = self._agents.get(sub.agent_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._agents[sub.agent_id]

    def connected(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._agents.values())

    def close(self) -> None:
        """End every stream (server shutdown)."""
        self.closed = True
        with self._lock:
            subs = [s for group in self._agents.values() for s in group]
        for sub in subs:
            sub.put(_CLOSE)

    # -- sending -------------------------------------------------------------------------------
    def to_agent(self, agent_id: int, kind: str, data: dict[str, Any]) -> None:
        message = {"type": kind, "data": data}
        with self._lock:
            subs = list(self._agents.get(agent_id, ()))
        for sub in subs:
            sub.put(message)

    def to_supervisors(self, kind: str, data: dict[str, Any]) -> None:
        message = {"type": kind, "data": data}
        with self._lock:
            subs = list(self._supervisors)
        for sub in subs:
            sub.put(message)

    def agents_on(self, call_id: str) -> set[int]:
        with self._lock:
            return set(self._call_agents.get(call_id, ()))

    # -- bus wiring ----------------------------------------------------------------------------
    def attach(self, bus: EventBus) -> None:
        handlers: list[tuple[type, Callable[[Any], None]]] = [
            (CallOffered, self._on_offered),
            (AgentAnswered, self._on_answered),
            (AgentNoAnswer, self._on_no_answer),
            (AgentStateChanged, self._on_agent_state),
            (CallQueued, self._on_call_event),
            (CallTransferred, self._on_transferred),
            (CallHungUp, self._on_hung_up),
            (CallEnded, self._on_call_event),
            (CallbackProgress, self._on_callback_progress),
            (CallbackDue, self._on_callback_due),
        ]
        for event_type, handler in handlers:
            bus.subscribe(event_type, handler)

    def _on_offered(self, event: CallOffered) -> None:
        with self._lock:
            self._call_agents.setdefault(event.call_id, set()).add(event.agent_id)
        self.to_agent(
            event.agent_id,
            "offer",
            {
                "call_id": event.call_id,
                "agent_id": event.agent_id,
                "offered_at": event.at.timestamp(),
            },
        )
        self.to_supervisors("calls", {"call_id": event.call_id, "event": "offered"})

    def _on_answered(self, event: AgentAnswered) -> None:
        self.to_agent(event.agent_id, "answered", {"call_id": event.call_id})
        self.to_supervisors("calls", {"call_id": event.call_id, "event": "answered"})

    def _on_no_answer(self, event: AgentNoAnswer) -> None:
        with self._lock:
            self._call_agents.get(event.call_id, set()).discard(event.agent_id)
        self.to_agent(event.agent_id, "missed", {"call_id": event.call_id})
        self.to_supervisors("calls", {"call_id": event.call_id, "event": "no_answer"})

    def _on_agent_state(self, event: AgentStateChanged) -> None:
        data = {
            "agent_id": event.agent_id,
            "state": event.state,
            "reason": event.reason,
            "since": event.at.isoformat(),
        }
        self.to_agent(event.agent_id, "state", data)
        self.to_supervisors("agent", data)

    def _on_transferred(self, event: CallTransferred) -> None:
        if event.from_agent_id is not None:
            self.to_agent(event.from_agent_id, "transferred", {"call_id": event.call_id})
        self.to_supervisors("calls", {"call_id": event.call_id, "event": "transferred"})

    def _on_hung_up(self, event: CallHungUp) -> None:
        for agent_id in self.agents_on(event.call_id):
            self.to_agent(agent_id, "hangup", {"call_id": event.call_id, "by": event.by})
        self.to_supervisors("calls", {"call_id": event.call_id, "event": "hangup"})

    def _on_callback_progress(self, event: CallbackProgress) -> None:
        """Dialling the customer / customer connected / did not answer (retry at HH:MM) / given up."""
        data = {
            "call_id": event.call_id,
            "state": event.state,
            "attempt": event.attempt,
            "max_attempts": event.max_attempts,
            "reason": event.reason,
            "retry_at": event.retry_at.isoformat() if event.retry_at is not None else None,
            "label": label(event.state, event.reason, event.retry_at),
        }
        self.to_agent(event.agent_id, "callback", data)
        self.to_supervisors("calls", {"call_id": event.call_id, "event": f"callback_{event.state}"})

    def _on_callback_due(self, event: CallbackDue) -> None:
        # The backend cannot dial: supervisors must see it (never the number: ids only).
        self.to_supervisors("calls", {"call_id": event.call_id, "event": "callback_not_dialled"})

    def _on_call_event(self, event: CallQueued | CallEnded) -> None:
        if isinstance(event, CallEnded):
            with self._lock:
                self._call_agents.pop(event.call_id, None)
        self.to_supervisors("calls", {"call_id": event.call_id, "event": type(event).__name__})


def _sse(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"


@bp.route("/stream")
@roles_required("agent", "supervisor", "admin")
def stream() -> Response:
    """The browser's one long-lived connection: ``EventSource('/events/stream')``."""
    console = get_console()
    me = user()
    sub = console.hub.subscribe(me.agent_id, supervisor=me.is_supervisor)
    max_attempts = console.settings.routing.callback_max_attempts

    def generate() -> Iterator[str]:
        from agent_console.services.screen_pop import build_screen_pop

        try:
            yield _sse("hello", {"agent_id": me.agent_id, "role": me.role})
            while not console.hub.closed:
                try:
                    message = sub.messages.get(timeout=HEARTBEAT_SECONDS)
                except queue.Empty:
                    yield ": keep-alive\n\n"
                    continue
                if message is _CLOSE:
                    return
                data = message["data"]
                if message["type"] == "offer":
                    with console.session_factory() as db:
                        pop = build_screen_pop(
                            db, data["call_id"], viewer_agent_id=me.agent_id, callback_max_attempts=max_attempts
                        )
                    data = {**data, "screen_pop": pop, "pushed_at": time.time()}
                yield _sse(message["type"], data)
        finally:
            console.hub.unsubscribe(sub)

    response = Response(stream_with_context(generate()), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response
