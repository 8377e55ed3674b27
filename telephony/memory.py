"""In-process telephony backend: no network, no audio — the SIMULATION backend.

It implements the same interface as the SIP, Asterisk and Twilio backends, so the IVR engine,
router and console run unchanged in unit tests, the simulator and ``callcentre demo``. Test code
plays the caller (``place_call``, ``press``, ``speak``, ``silence``, ``caller_hangs_up``) and the
agent's phone (``agent_answers``, ``agent_rejects``); everything the platform asked of the backend
is kept in ``performed`` and ``commands`` for inspection. It can consult (warm transfer,
:class:`telephony.base.ConsultCapable`): while ``consulting``, ``agent_answers`` connects the second
agent to the first (``consulted_agent``) and the caller stays ``on_hold``. The first agent hanging up
(``agent_hangs_up``) while consulting hands the caller over (``ConsultHandedOver``) instead of ending the call,
as the SIP backend does.

It can call back (:class:`telephony.base.CallbackCapable`), simulated with explicit hooks instead of a
network: ``call_back`` rings the agent (``agent_answers`` / ``agent_rejects`` as for any offer); once
the agent answered, the customer's phone "rings" until the test (or demo) says what the customer did:
``customer_answers(call_id)`` bridges them, ``customer_unavailable(call_id, reason)`` ends the attempt;
the agent ending it meanwhile (``hangup`` from the console, or ``agent_hangs_up``) publishes
``CallbackUnanswered(reason="agent-ended")``.
Nothing rings by itself and no timer runs: the ring times are only recorded in ``callbacks``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from callcentre.bus import EventBus
from callcentre.domain.events import (
    AgentAnswered,
    AgentNoAnswer,
    CallArrived,
    CallbackAnswered,
    CallbackUnanswered,
    CallHungUp,
    ConsultHandedOver,
    DigitsReceived,
    InputTimedOut,
    SpeechHeard,
)
from callcentre.domain.ids import new_call_id
from ivr.actions import TERMINAL_ACTIONS, Action, Gather, Hangup, Prompt
from telephony.base import AgentEndpoint


@dataclass
class MemoryCall:
    call_id: str
    caller_id: str
    dialled: str
    heard: list[Prompt] = field(default_factory=list)
    """Every prompt played to the caller, in order."""
    waiting_for_input: Gather | None = None
    ringing_agent: AgentEndpoint | None = None
    connected_agent: int | None = None
    consulting: bool = False
    """A warm transfer's consultation is on: ``ringing_agent`` / ``consulted_agent`` is the second agent."""
    consulted_agent: int | None = None
    """The second agent, once they answered the consultation (talking to ``connected_agent``)."""
    handover_from: int | None = None
    """The first agent hung up while the consulted agent still rang: the caller (held) waits for them."""
    on_hold: bool = False
    ended: bool = False
    callback_phase: str = ""
    """A callback leg: ``agent`` (the agent's phone rings), ``customer`` (the agent answered, the
    customer's phone rings), ``connected``; empty for an ordinary inbound call."""


@dataclass(frozen=True)
class DialledCallback:
    """One ``call_back`` request as the platform made it (for tests to inspect; simulated, not dialled)."""

    call_id: str
    number: str
    agent: AgentEndpoint
    ring_seconds: float
    customer_ring_seconds: float


CALLBACK_REASONS = ("no-answer", "busy", "rejected", "failed")


class MemoryBackend:
    name = "memory"

    def __init__(self) -> None:
        self.bus: EventBus | None = None
        self.calls: dict[str, MemoryCall] = {}
        self.performed: dict[str, list[Action]] = {}
        self.commands: list[tuple[str, str, object]] = []
        self.callbacks: list[DialledCallback] = []
        """Every callback the platform asked for, in order (the number is kept here only, never logged)."""
        self._lock = threading.Lock()

    # -- TelephonyBackend ---------------------------------------------------------------------

    def start(self, bus: EventBus) -> None:
        self.bus = bus

    def stop(self) -> None:
        for call_id, call in list(self.calls.items()):
            if not call.ended:
                self.hangup(call_id)

    def perform(self, call_id: str, action: Action) -> None:
        call = self.calls[call_id]
        with self._lock:
            self.performed.setdefault(call_id, []).append(action)
            call.heard.extend(action.prompts)
            call.waiting_for_input = action if isinstance(action, Gather) else None
        if isinstance(action, Hangup):
            self._end(call_id, by="platform")
        elif isinstance(action, TERMINAL_ACTIONS) and not isinstance(action, Hangup):
            self.commands.append(("ivr_done", call_id, type(action).__name__))

    def connect_agent(self, call_id: str, agent: AgentEndpoint, ring_seconds: float) -> None:
        self.commands.append(("connect_agent", call_id, agent))
        self.calls[call_id].ringing_agent = agent

    # -- ConsultCapable (warm transfer) -----------------------------------------------------------

    def consult(self, call_id: str, agent: AgentEndpoint, ring_seconds: float) -> None:
        self.commands.append(("consult", call_id, agent))
        call = self.calls[call_id]
        call.on_hold, call.consulting = True, True
        call.ringing_agent, call.consulted_agent = agent, None

    def complete_consult(self, call_id: str) -> None:
        self.commands.append(("complete_consult", call_id, None))
        call = self.calls[call_id]
        if call.consulted_agent is None:  # nobody answered: like the SIP backend, give the caller back
            self.cancel_consult(call_id)
            return
        call.connected_agent, call.consulted_agent = call.consulted_agent, None
        call.consulting, call.on_hold = False, False

    def cancel_consult(self, call_id: str) -> None:
        self.commands.append(("cancel_consult", call_id, None))
        call = self.calls[call_id]
        if call.consulting:
            call.ringing_agent = None
        call.consulted_agent, call.consulting, call.on_hold = None, False, False

    # -- CallbackCapable (simulated: the hooks below play the customer's phone) -----------------------

    def call_back(
        self, call_id: str, number: str, agent: AgentEndpoint, ring_seconds: float, customer_ring_seconds: float
    ) -> None:
        """Ring ``agent`` for a callback of ``call_id`` (whose own caller leg is long gone: a fresh leg
        replaces it). Nothing happens until ``agent_answers`` / ``agent_rejects``."""
        self.commands.append(("call_back", call_id, agent))
        self.callbacks.append(DialledCallback(call_id, number, agent, ring_seconds, customer_ring_seconds))
        old = self.calls.get(call_id)
        leg = MemoryCall(call_id, caller_id=number, dialled=old.dialled if old else "", ringing_agent=agent)
        leg.callback_phase = "agent"
        self.calls[call_id] = leg

    def customer_answers(self, call_id: str) -> None:
        """The customer picks up the callback: bridged to the agent, ``CallbackAnswered``."""
        call = self._dialling(call_id)
        call.callback_phase = "connected"
        assert call.connected_agent is not None
        self._publish(CallbackAnswered(call_id, agent_id=call.connected_agent))

    def customer_unavailable(self, call_id: str, reason: str = "no-answer") -> None:
        """The customer does not take the callback (``no-answer``, ``busy``, ``rejected``, ``failed``): the
        agent's leg ends quietly and ``CallbackUnanswered`` is published (never ``CallHungUp``)."""
        if reason not in CALLBACK_REASONS:
            raise ValueError(f"reason must be one of {', '.join(CALLBACK_REASONS)}")
        call = self._dialling(call_id)
        agent_id = call.connected_agent
        assert agent_id is not None
        call.ended, call.connected_agent, call.callback_phase = True, None, ""
        self._publish(CallbackUnanswered(call_id, agent_id=agent_id, reason=reason))

    def _dialling(self, call_id: str) -> MemoryCall:
        call = self.calls.get(call_id)
        if call is None or call.ended or call.callback_phase != "customer":
            raise ValueError(f"call {call_id}: no callback is dialling a customer")
        return call

    def hold(self, call_id: str, on: bool) -> None:
        self.commands.append(("hold", call_id, on))
        self.calls[call_id].on_hold = on

    def hangup(self, call_id: str) -> None:
        self.commands.append(("hangup", call_id, None))
        call = self.calls.get(call_id)
        if call is not None and not call.ended and call.callback_phase == "customer":
            # The agent ends the callback attempt while the customer's phone rings (console hang-up):
            # CallbackUnanswered("agent-ended"), never CallHungUp.
            self._agent_ended(call)
            return
        self._end(call_id, by="platform")

    def _agent_ended(self, call: MemoryCall) -> None:
        agent_id = call.connected_agent
        assert agent_id is not None
        call.ended, call.connected_agent, call.callback_phase = True, None, ""
        self._publish(CallbackUnanswered(call.call_id, agent_id=agent_id, reason="agent-ended"))

    # -- the caller's side (tests, simulation, demo) -------------------------------------------

    def place_call(self, caller_id: str, dialled: str = "1000") -> str:
        call_id = new_call_id()
        self.calls[call_id] = MemoryCall(call_id, caller_id, dialled)
        self._publish(CallArrived(call_id, caller_id=caller_id, dialled=dialled, backend=self.name,
                                  backend_ref=call_id))
        return call_id

    def press(self, call_id: str, digits: str) -> None:
        self._publish(DigitsReceived(call_id, digits=digits))

    def speak(self, call_id: str, text: str, confidence: float = 0.9) -> None:
        self._publish(SpeechHeard(call_id, text=text, confidence=confidence))

    def silence(self, call_id: str) -> None:
        self._publish(InputTimedOut(call_id))

    def caller_hangs_up(self, call_id: str) -> None:
        self._end(call_id, by="caller")

    # -- the agent's phone ----------------------------------------------------------------------

    def agent_answers(self, call_id: str) -> None:
        call = self.calls[call_id]
        if call.ringing_agent is None:
            raise ValueError(f"call {call_id}: no agent is ringing")
        agent_id = call.ringing_agent.agent_id
        if call.handover_from is not None:
            # The first agent is gone: the consulted agent gets the caller directly.
            first, call.handover_from = call.handover_from, None
            call.ringing_agent, call.connected_agent, call.consulting, call.on_hold = None, agent_id, False, False
            self._publish(AgentAnswered(call_id, agent_id=agent_id))
            self._publish(ConsultHandedOver(call_id, from_agent_id=first, to_agent_id=agent_id, answered=True))
            return
        if call.consulting:
            call.ringing_agent, call.consulted_agent = None, agent_id
        else:
            call.ringing_agent, call.connected_agent = None, agent_id
        if call.callback_phase == "agent":
            call.callback_phase = "customer"  # the agent hears ringback; the customer's phone rings now
        self._publish(AgentAnswered(call_id, agent_id=agent_id))

    def agent_rejects(self, call_id: str) -> None:
        call = self.calls[call_id]
        if call.ringing_agent is None:
            raise ValueError(f"call {call_id}: no agent is ringing")
        agent_id = call.ringing_agent.agent_id
        call.ringing_agent = None
        if call.handover_from is not None:
            # Nobody has the caller now: they wait (queue music) like any queued caller; the platform re-queues.
            call.handover_from, call.consulting, call.on_hold = None, False, False
        if call.callback_phase == "agent":
            call.ended, call.callback_phase = True, ""  # the callback leg was only the agent's: it is gone
        self._publish(AgentNoAnswer(call_id, agent_id=agent_id))

    def agent_hangs_up(self, call_id: str) -> None:
        """The connected agent hangs up. During a consultation that is the FIRST agent, and the caller is
        handed over to the consulted agent (answered: bridged now; ringing: held until they answer)."""
        call = self.calls.get(call_id)
        if call is not None and not call.ended and call.callback_phase == "customer":
            self._agent_ended(call)  # hung up on ringback: the attempt ends, "agent-ended"
            return
        if call is not None and not call.ended and call.consulting and call.connected_agent is not None:
            first = call.connected_agent
            if call.consulted_agent is not None:
                to = call.consulted_agent
                call.connected_agent, call.consulted_agent = to, None
                call.consulting, call.on_hold = False, False
                self._publish(ConsultHandedOver(call_id, from_agent_id=first, to_agent_id=to, answered=True))
                return
            if call.ringing_agent is not None:
                to = call.ringing_agent.agent_id
                call.connected_agent, call.handover_from = None, first
                self._publish(ConsultHandedOver(call_id, from_agent_id=first, to_agent_id=to, answered=False))
                return
        self._end(call_id, by="agent")

    # -- helpers ----------------------------------------------------------------------------------

    def last_action(self, call_id: str) -> Action:
        return self.performed[call_id][-1]

    def heard_ids(self, call_id: str) -> list[str]:
        return [p.id for p in self.calls[call_id].heard]

    def _end(self, call_id: str, by: str) -> None:
        call = self.calls.get(call_id)
        if call is None or call.ended:
            return
        call.ended = True
        call.waiting_for_input = None
        self._publish(CallHungUp(call_id, by=by))

    def _publish(self, event: object) -> None:
        if self.bus is None:
            raise RuntimeError("MemoryBackend.start(bus) must be called before calls are placed")
        self.bus.publish(event)
