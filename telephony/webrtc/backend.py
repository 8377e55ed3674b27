"""A telephony backend wrapper that reaches browser agents through the WebRTC gateway.

Agents whose contact is ``browser`` are rung at the gateway's SIP URI for that agent; everything
else passes through to the wrapped backend unchanged, so SIP-phone and browser agents can sit in
the same queue. It also adds the powers the console discovers with ``getattr``: ``answer_agent``
(the agent answers in the page), ``mute`` and ``send_dtmf`` for browser legs.
"""

from __future__ import annotations

import threading
from typing import Any

from callcentre.bus import EventBus
from callcentre.domain.events import AgentAnswered, AgentNoAnswer, CallbackUnanswered, CallEnded
from callcentre.settings import Settings
from ivr.actions import Action
from telephony.base import AgentEndpoint, TelephonyBackend, can_call_back, can_consult
from telephony.webrtc.gateway import WebRtcGateway

BROWSER = "browser"


class BrowserAgentBackend:
    def __init__(self, inner: TelephonyBackend, gateway: WebRtcGateway) -> None:
        self.inner = inner
        self.webrtc_gateway = gateway
        self.name = inner.name
        self.bus: EventBus | None = None
        self._browser_legs: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        # Further powers of the wrapped backend (address, transfer helpers, supervision …).
        if name == "call_back":
            # Routed like connect_agent (a browser agent is rung at the gateway), and only offered when the
            # wrapped backend can dial callbacks, so ``can_call_back(wrapper)`` stays truthful.
            if not can_call_back(self.inner):
                raise AttributeError(name)
            return self._call_back
        return getattr(self.inner, name)

    @property
    def audio_sink(self) -> Any:
        """The wrapped backend's received-audio hook (recording taps it); set it there, not here."""
        return self.inner.audio_sink  # type: ignore[attr-defined]

    @audio_sink.setter
    def audio_sink(self, sink: Any) -> None:
        self.inner.audio_sink = sink  # type: ignore[attr-defined]

    def start(self, bus: EventBus) -> None:
        self.bus = bus
        bus.subscribe(CallEnded, lambda event: self.forget(event.call_id))
        bus.subscribe(CallbackUnanswered, lambda event: self.forget(event.call_id))  # that agent leg is over
        self.webrtc_gateway.start()
        self.inner.start(bus)

    def stop(self) -> None:
        self.inner.stop()
        self.webrtc_gateway.stop()

    def perform(self, call_id: str, action: Action) -> None:
        self.inner.perform(call_id, action)

    def hold(self, call_id: str, on: bool) -> None:
        self.inner.hold(call_id, on)

    def hangup(self, call_id: str) -> None:
        self.inner.hangup(call_id)

    def _route(self, call_id: str, agent: AgentEndpoint) -> AgentEndpoint | None:
        """The endpoint the wrapped backend should ring, or None when a browser agent has no audio."""
        if agent.contact != BROWSER:
            return agent
        if not self.webrtc_gateway.has_session(agent.agent_id):
            return None
        with self._lock:
            self._browser_legs.add((call_id, agent.agent_id))
        self.webrtc_gateway.expect(call_id, agent.agent_id)
        return AgentEndpoint(agent.agent_id, self.webrtc_gateway.agent_uri(agent.agent_id))

    def connect_agent(self, call_id: str, agent: AgentEndpoint, ring_seconds: float) -> None:
        target = self._route(call_id, agent)
        if target is None:
            if self.bus is not None:
                self.bus.publish(AgentNoAnswer(call_id, agent_id=agent.agent_id))
            return
        self.inner.connect_agent(call_id, target, ring_seconds)

    def transfer_to_agent(self, call_id: str, agent: AgentEndpoint, ring_seconds: float) -> None:
        target = self._route(call_id, agent)
        transfer = getattr(self.inner, "transfer_to_agent", None)
        if target is None or transfer is None:
            if self.bus is not None:
                self.bus.publish(AgentNoAnswer(call_id, agent_id=agent.agent_id))
            return
        transfer(call_id, target, ring_seconds)

    # Warm transfer: the consulted agent may be a browser or a SIP phone, like any agent.
    def consult(self, call_id: str, agent: AgentEndpoint, ring_seconds: float) -> None:
        target = self._route(call_id, agent)
        if target is None:
            if self.bus is not None:
                self.bus.publish(AgentNoAnswer(call_id, agent_id=agent.agent_id))
            return
        if can_consult(self.inner):
            self.inner.consult(call_id, target, ring_seconds)
        else:  # the wrapped backend cannot consult: the old hold-and-ring
            self.inner.hold(call_id, True)
            self.inner.connect_agent(call_id, target, ring_seconds)

    def _call_back(
        self, call_id: str, number: str, agent: AgentEndpoint, ring_seconds: float, customer_ring_seconds: float
    ) -> None:
        """``call_back`` (see ``__getattr__``): the agent may be a browser or a SIP phone."""
        target = self._route(call_id, agent)
        if target is None:
            if self.bus is not None:
                self.bus.publish(AgentNoAnswer(call_id, agent_id=agent.agent_id))
            return
        inner = self.inner
        assert can_call_back(inner)
        inner.call_back(call_id, number, target, ring_seconds, customer_ring_seconds)

    def complete_consult(self, call_id: str) -> None:
        if can_consult(self.inner):
            self.inner.complete_consult(call_id)
        else:
            self.inner.hold(call_id, False)

    def cancel_consult(self, call_id: str) -> None:
        if can_consult(self.inner):
            self.inner.cancel_consult(call_id)
        else:
            self.inner.hold(call_id, False)

    def _is_browser(self, call_id: str, agent_id: int) -> bool:
        with self._lock:
            return (call_id, agent_id) in self._browser_legs

    def answer_agent(self, call_id: str, agent_id: int) -> None:
        """The agent pressed Answer; the wrapped backend publishes ``AgentAnswered`` on the 200 OK."""
        if self._is_browser(call_id, agent_id):
            self.webrtc_gateway.answer(call_id, agent_id)
            return
        inner_answer = getattr(self.inner, "answer_agent", None)
        phone_answers = getattr(self.inner, "agent_answers", None)  # the memory backend's simulated phone
        if callable(inner_answer):
            inner_answer(call_id, agent_id)
        elif callable(phone_answers):
            phone_answers(call_id)
        elif self.bus is not None:
            self.bus.publish(AgentAnswered(call_id, agent_id))

    def mute(self, call_id: str, agent_id: int, on: bool) -> None:
        if self._is_browser(call_id, agent_id):
            self.webrtc_gateway.mute(call_id, agent_id, on)
            return
        inner_mute = getattr(self.inner, "mute", None)
        if not callable(inner_mute):
            raise RuntimeError("this agent uses a SIP phone; use the phone's mute")
        inner_mute(call_id, agent_id, on)

    def send_dtmf(self, call_id: str, digits: str) -> None:
        if self.webrtc_gateway.send_dtmf(call_id, None, digits):
            return
        inner_dtmf = getattr(self.inner, "send_dtmf", None)
        if not callable(inner_dtmf):
            raise RuntimeError("this agent uses a SIP phone; use the phone's keypad")
        inner_dtmf(call_id, digits)

    def forget(self, call_id: str) -> None:
        with self._lock:
            self._browser_legs = {leg for leg in self._browser_legs if leg[0] != call_id}


def build_sip_backend_for_browsers(settings: Settings) -> TelephonyBackend:
    """The SIP endpoint, behind the WebRTC gateway when ``webrtc.enabled`` (for ``callcentre.bootstrap``)."""
    from telephony.sip import build_sip_backend

    sip = build_sip_backend(settings)
    if not settings.webrtc.enabled:
        return sip
    wrapped: TelephonyBackend = BrowserAgentBackend(sip, WebRtcGateway(settings.webrtc))
    return wrapped
