"""Domain events: small frozen dataclasses named in the past tense.

Telephony backends publish the *call* events; the IVR runner, router and console publish the rest.
``docs/architecture.md`` lists who emits and who consumes each one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from callcentre.db.base import utcnow


@dataclass(frozen=True)
class Event:
    call_id: str
    at: datetime = field(default_factory=utcnow, kw_only=True)


@dataclass(frozen=True)
class CallArrived(Event):
    caller_id: str
    dialled: str
    backend: str
    backend_ref: str = ""


@dataclass(frozen=True)
class CallAnswered(Event):
    """The platform answered the caller's leg (the IVR may now speak)."""


@dataclass(frozen=True)
class PromptFinished(Event):
    """The last Say/Play of an action finished playing."""


@dataclass(frozen=True)
class DigitsReceived(Event):
    digits: str
    """One or more DTMF keys, in order (``#`` and ``*`` included)."""


@dataclass(frozen=True)
class SpeechHeard(Event):
    text: str
    confidence: float


@dataclass(frozen=True)
class InputTimedOut(Event):
    """A Gather's timeout passed with no (complete) input."""


@dataclass(frozen=True)
class CallHungUp(Event):
    by: str
    """``caller``, ``agent``, ``platform``, or ``transfer`` (the outside party of a blind transfer)."""
    cause: str = "normal"


@dataclass(frozen=True)
class CallQueued(Event):
    queue: str
    required_skills: tuple[tuple[str, int], ...]
    priority: int
    language: str


@dataclass(frozen=True)
class CallOffered(Event):
    agent_id: int
    why: str = ""


@dataclass(frozen=True)
class AgentAnswered(Event):
    agent_id: int


@dataclass(frozen=True)
class AgentNoAnswer(Event):
    agent_id: int


@dataclass(frozen=True)
class CallTransferred(Event):
    from_agent_id: int | None
    kind: str
    """``blind``, ``warm`` or ``queue``."""
    target: str
    reason: str
    note: str


@dataclass(frozen=True)
class ConsultHandedOver(Event):
    """The FIRST agent hung up during a warm transfer's consultation ("attended transfer on hang-up"):
    the caller is handed over to the consulted agent instead of being dropped.

    ``answered=True``: the consulted agent is on the line and the backend has already bridged the caller
    to them (the first agent's leg is gone); the platform records it like a completed warm transfer.
    ``answered=False``: the consulted agent's phone still rings; the caller stays held (music) with the
    first agent's leg gone. When they answer the backend publishes ``AgentAnswered`` and then this event
    again with ``answered=True``; when they do not, ``AgentNoAnswer`` (the platform re-queues the caller)."""

    from_agent_id: int
    to_agent_id: int
    answered: bool = True


@dataclass(frozen=True)
class CallbackRequested(Event):
    """The caller asked to be called back (IVR menu or queue offer); ``keep_place`` if from the queue."""

    number: str
    queue: str
    keep_place: bool = False


@dataclass(frozen=True)
class CallbackAnswered(Event):
    """The customer picked up a callback the platform dialled for an agent who had already answered;
    the two are now bridged and the call goes on like any connected call (``CallHungUp`` ends it)."""

    agent_id: int


@dataclass(frozen=True)
class CallbackUnanswered(Event):
    """The platform dialled a customer back for an agent who had answered, and the customer did not
    pick up. The backend has already ended the agent's leg; the dispatcher decides on a retry."""

    agent_id: int
    reason: str
    """``no-answer`` (rang out), ``busy``, ``rejected`` or ``failed`` (unreachable, bad number, network) — or
    ``agent-ended``: the agent ended the attempt while the customer's phone rang (not counted against the
    customer's attempts)."""


@dataclass(frozen=True)
class CallEnded(Event):
    outcome: str
    at_step: str = ""


@dataclass(frozen=True)
class AgentStateChanged:
    agent_id: int
    state: str
    reason: str = ""
    at: datetime = field(default_factory=utcnow, kw_only=True)
