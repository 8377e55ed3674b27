"""The small interface every telephony backend implements.

Backends turn network signalling into domain events on the bus (``CallArrived``,
``DigitsReceived``, ``SpeechHeard``, ``InputTimedOut``, ``AgentAnswered``, ``AgentNoAnswer``,
``CallHungUp``) and perform the commands below. They hold no business rules: the IVR engine and the
router decide, the backend carries out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeGuard, runtime_checkable

from callcentre.bus import EventBus
from ivr.actions import Action


@dataclass(frozen=True)
class AgentEndpoint:
    agent_id: int
    contact: str
    """Where the agent's audio is: ``sip:user@host:port``, ``client:login`` (Twilio), ``browser``."""


@runtime_checkable
class TelephonyBackend(Protocol):
    name: str

    def start(self, bus: EventBus) -> None:
        """Begin accepting calls; events go to ``bus``."""

    def stop(self) -> None:
        """End every call cleanly and release sockets."""

    def perform(self, call_id: str, action: Action) -> None:
        """Carry out an IVR action (prompts, then gather / enqueue-hold / transfer / hang up)."""

    def connect_agent(self, call_id: str, agent: AgentEndpoint, ring_seconds: float) -> None:
        """Ring the agent and bridge on answer; publish ``AgentAnswered`` or ``AgentNoAnswer``."""

    def hold(self, call_id: str, on: bool) -> None:
        """Put the caller on hold (music) or take them off."""

    def hangup(self, call_id: str) -> None:
        """End the call from the platform side."""


@runtime_checkable
class ConsultCapable(Protocol):
    """Optional backend power: a warm transfer's consultation, where the two agents talk while the
    caller is held. Backends without it get the plain ``hold`` + ``connect_agent`` (the second agent
    rings while the first agent's leg may be replaced)."""

    def consult(self, call_id: str, agent: AgentEndpoint, ring_seconds: float) -> None:
        """Hold the caller (music), keep the first agent's leg up and ring ``agent``. On answer publish
        ``AgentAnswered`` and bridge the two agents to each other; on no answer ``AgentNoAnswer`` (the
        caller stays held and the first agent can take them back with :meth:`cancel_consult`)."""

    def complete_consult(self, call_id: str) -> None:
        """Bridge the caller to the consulted agent and end the first agent's leg."""

    def cancel_consult(self, call_id: str) -> None:
        """End the consulted agent's leg (ringing or talking) and bridge the caller to the first agent."""


CONSULT_METHODS = ("consult", "complete_consult", "cancel_consult")


@runtime_checkable
class CallbackCapable(Protocol):
    """Optional backend power: call a customer back for an agent reserved for them (the caller chose a
    callback and hung up, keeping their place).

    Agent first, as a preview dialler does: the agent is rung for ``ring_seconds``. No answer →
    ``AgentNoAnswer(call_id, agent_id)`` (the place is kept, exactly as for a live caller). Answer →
    ``AgentAnswered(call_id, agent_id)`` at once (the agent is on the call and sees the screen pop), then
    the backend dials ``number`` for ``customer_ring_seconds`` while the agent hears ringback. The customer
    answers → the two are bridged and ``CallbackAnswered(call_id, agent_id)`` is published; from then on
    the call is like any connected call (``hold``, ``hangup``, transfers, ``CallHungUp`` when either side
    hangs up). The customer does not answer, is busy, rejects or cannot be reached → the backend ends the
    agent's leg and publishes ``CallbackUnanswered(call_id, agent_id, reason)``; it never publishes
    ``CallHungUp`` for that attempt. The agent may give up while the customer's phone rings (``hangup(call_id)``
    from the console, or the agent hanging up their phone): the backend stops dialling (SIP: CANCEL once a
    provisional response came), ends the agent's leg and publishes ``CallbackUnanswered(call_id, agent_id,
    reason="agent-ended")`` — again never ``CallHungUp``. The number is customer data: never log it."""

    def call_back(
        self, call_id: str, number: str, agent: AgentEndpoint, ring_seconds: float, customer_ring_seconds: float
    ) -> None: ...


def can_call_back(backend: object) -> TypeGuard[CallbackCapable]:
    """Whether ``backend`` can dial callbacks (dynamic look-up, for the same reason as :func:`can_consult`)."""
    return callable(getattr(backend, "call_back", None))


def can_consult(backend: object) -> TypeGuard[ConsultCapable]:
    """Whether ``backend`` offers consultation. Looked up dynamically (not ``isinstance``) so a wrapper that
    forwards attributes to the backend it wraps (``telephony.wrapper``) counts on every Python version:
    from 3.12 protocol checks use static look-ups that do not see ``__getattr__``."""
    return all(callable(getattr(backend, name, None)) for name in CONSULT_METHODS)


def make_backend_name_error(name: str, allowed: list[str]) -> ValueError:
    return ValueError(f"unknown telephony backend {name!r}; choose one of {', '.join(sorted(allowed))}")
