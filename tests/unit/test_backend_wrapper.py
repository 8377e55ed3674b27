"""BackendWrapper passes every command through and exposes the inner backend's optional parts."""

from __future__ import annotations

from callcentre.bus import EventBus
from callcentre.domain.events import CallArrived
from ivr.actions import Hangup, Prompt
from telephony.base import AgentEndpoint, TelephonyBackend
from telephony.memory import MemoryBackend
from telephony.wrapper import BackendWrapper


class CountingWrapper(BackendWrapper):
    def __init__(self, inner: TelephonyBackend) -> None:
        super().__init__(inner)
        self.performed = 0

    def perform(self, call_id: str, action: object) -> None:  # type: ignore[override]
        self.performed += 1
        super().perform(call_id, action)  # type: ignore[arg-type]


def test_commands_pass_through_and_extras_are_reachable() -> None:
    inner = MemoryBackend()
    wrapped = CountingWrapper(inner)
    assert isinstance(wrapped, TelephonyBackend) and wrapped.name == "memory"
    bus = EventBus()
    arrived: list[CallArrived] = []
    bus.subscribe(CallArrived, arrived.append)
    wrapped.start(bus)
    call_id = wrapped.place_call("+15550000001")  # an inner-only method, reached through the wrapper
    assert [e.call_id for e in arrived] == [call_id]
    wrapped.connect_agent(call_id, AgentEndpoint(7, "sip:a@127.0.0.1"), 10)
    wrapped.hold(call_id, True)
    wrapped.perform(call_id, Hangup(prompts=(Prompt("bye", "Bye"),)))
    assert wrapped.performed == 1
    assert inner.calls[call_id].ended and inner.calls[call_id].on_hold
    assert [c[0] for c in inner.commands] == ["connect_agent", "hold"]


def test_consultation_is_seen_through_a_wrapper_and_not_invented() -> None:
    from telephony.base import can_consult

    class NoConsult:
        name = "plain"

        def start(self, bus: EventBus) -> None: ...
        def stop(self) -> None: ...
        def perform(self, call_id: str, action: object) -> None: ...
        def connect_agent(self, call_id: str, agent: AgentEndpoint, ring_seconds: float) -> None: ...
        def hold(self, call_id: str, on: bool) -> None: ...
        def hangup(self, call_id: str) -> None: ...

    assert can_consult(MemoryBackend())
    assert can_consult(BackendWrapper(MemoryBackend()))
    assert not can_consult(NoConsult())
    assert not can_consult(BackendWrapper(NoConsult()))  # type: ignore[arg-type]
