"""A backend that wraps another and passes every call through; subclasses override what they add.

Used for cross-cutting behaviour in front of a real backend (pausing recordings on PIN gathers,
listening for spoken menu choices). Attributes the wrapper does not define — optional capabilities
of the inner backend, its media hooks — are looked up on the inner backend.
"""

from __future__ import annotations

from typing import Any

from callcentre.bus import EventBus
from ivr.actions import Action
from telephony.base import AgentEndpoint, TelephonyBackend


class BackendWrapper:
    def __init__(self, inner: TelephonyBackend) -> None:
        self.inner = inner
        self.name = inner.name

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not found normally: optional capabilities of the inner backend.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def start(self, bus: EventBus) -> None:
        self.inner.start(bus)

    def stop(self) -> None:
        self.inner.stop()

    def perform(self, call_id: str, action: Action) -> None:
        self.inner.perform(call_id, action)

    def connect_agent(self, call_id: str, agent: AgentEndpoint, ring_seconds: float) -> None:
        self.inner.connect_agent(call_id, agent, ring_seconds)

    def hold(self, call_id: str, on: bool) -> None:
        self.inner.hold(call_id, on)

    def hangup(self, call_id: str) -> None:
        self.inner.hangup(call_id)
