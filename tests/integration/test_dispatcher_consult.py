"""Warm transfers through the dispatcher on a backend that can consult (the in-process memory
backend, :class:`telephony.base.ConsultCapable`): consult → complete, consult → return, the consulted
agent not answering (the caller stays with the first agent, nobody else is offered the call), and a
backend without the power keeps the plain hold-and-ring. Real bus, real SQLite/PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from callcentre.db.models import CallSegment, QueueEntry, TransferRecord
from callcentre.domain.events import AgentAnswered, AgentNoAnswer
from routing import reservations as rsv
from routing import transfers as tr
from routing.dispatcher import DispatcherConfig
from telephony.base import AgentEndpoint, ConsultCapable
from telephony.memory import MemoryBackend
from tests.integration.test_dispatcher import Platform, _seed
from tests.integration.test_dispatcher import platform as platform  # noqa: F401  (fixture)


def _connected_to_first(platform: Platform) -> tuple[str, int, int, int]:
    a1, a2, a3 = _seed(platform.sessions, [5, 4, 3])
    call_id = platform.arrive()
    assert platform.ringing(call_id) == a1
    platform.backend.agent_answers(call_id)
    return call_id, a1, a2, a3


def _warm(platform: Platform, call_id: str, a1: int, a2: int) -> TransferRecord:
    return platform.dispatcher.transfer(tr.TransferRequest(call_id, a1, "warm", "agent", str(a2), "approval"))


def _open_segments(platform: Platform, call_id: str) -> set[int | None]:
    with platform.sessions() as s:
        return set(
            s.scalars(
                select(CallSegment.agent_id).where(
                    CallSegment.call_id == call_id,
                    CallSegment.started_at.is_not(None),
                    CallSegment.ended_at.is_(None),
                )
            )
        )


def test_memory_backend_is_consult_capable() -> None:
    assert isinstance(MemoryBackend(), ConsultCapable)


def test_consult_then_complete_hands_the_caller_to_the_second_agent(platform: Platform) -> None:
    call_id, a1, a2, _a3 = _connected_to_first(platform)
    record = _warm(platform, call_id, a1, a2)
    call = platform.backend.calls[call_id]
    kinds = [c[0] for c in platform.backend.commands]
    assert "consult" in kinds and "connect_agent" not in kinds[kinds.index("consult"):]
    assert call.on_hold and call.consulting and call.connected_agent == a1 and platform.ringing(call_id) == a2
    platform.backend.agent_answers(call_id)
    # consulting: the first agent is still connected, the second is talking to them, the caller held
    assert (call.connected_agent, call.consulted_agent, call.on_hold) == (a1, a2, True)
    assert _open_segments(platform, call_id) == {a1, a2}
    platform.dispatcher.complete_warm(record.id)
    assert platform.backend.commands[-1] == ("complete_consult", call_id, None)
    assert (call.connected_agent, call.consulted_agent, call.on_hold, call.consulting) == (a2, None, False, False)
    assert _open_segments(platform, call_id) == {a2}
    assert platform.agent(a1).state == "wrap_up" and platform.agent(a2).state == "on_call"


def test_consult_then_return_gives_the_caller_back_to_the_first_agent(platform: Platform) -> None:
    call_id, a1, a2, _a3 = _connected_to_first(platform)
    record = _warm(platform, call_id, a1, a2)
    platform.backend.agent_answers(call_id)
    call = platform.backend.calls[call_id]
    assert call.consulted_agent == a2
    platform.dispatcher.return_warm(record.id)
    assert platform.backend.commands[-1] == ("cancel_consult", call_id, None)
    assert call.connected_agent == a1 and not call.on_hold and not call.consulting
    assert call.consulted_agent is None
    assert _open_segments(platform, call_id) == {a1}
    assert platform.agent(a1).state == "on_call" and platform.agent(a2).state == "wrap_up"
    with platform.sessions() as s:
        assert s.get(TransferRecord, record.id).status == "returned"


def test_consulted_agent_not_answering_leaves_the_caller_with_the_first_agent(platform: Platform) -> None:
    call_id, a1, a2, a3 = _connected_to_first(platform)
    record = _warm(platform, call_id, a1, a2)
    platform.backend.agent_rejects(call_id)
    assert platform.of(AgentNoAnswer)[-1].agent_id == a2
    platform.free(a3)  # a free agent must NOT be offered this caller: the first agent still has them
    call = platform.backend.calls[call_id]
    assert platform.ringing(call_id) is None and call.connected_agent == a1 and call.on_hold
    with platform.sessions() as s:
        entry = s.scalars(select(QueueEntry).where(QueueEntry.call_id == call_id)).one()
        assert entry.status == "connected"
        assert rsv.active_reservation(s, call_id) is None
    platform.dispatcher.return_warm(record.id)
    assert not call.on_hold and call.connected_agent == a1
    assert _open_segments(platform, call_id) == {a1}
    assert platform.agent(a3).state == "available"


def test_consultation_timing_out_on_the_tick_also_keeps_the_caller(platform: Platform) -> None:
    """The backend never reported (no AgentNoAnswer): the reservation expires on the dispatcher's tick."""
    call_id, a1, a2, a3 = _connected_to_first(platform)
    _warm(platform, call_id, a1, a2)
    platform.free(a3)
    platform.clock.advance(16)  # ring_seconds is 15 in the fixture
    platform.dispatcher.tick()
    with platform.sessions() as s:
        entry = s.scalars(select(QueueEntry).where(QueueEntry.call_id == call_id)).one()
        assert entry.status == "connected" and rsv.active_reservation(s, call_id) is None
    assert platform.agent(a2).state == "available" and platform.agent(a3).state == "available"
    rung = [c[2] for c in platform.backend.commands if c[0] == "connect_agent"]
    assert AgentEndpoint(a3, "sip:d2@127.0.0.1") not in rung  # nobody else is offered the caller


class HoldOnlyBackend:
    """The memory backend with consultation left out, as a backend without the power looks."""

    def __init__(self) -> None:
        self.inner = MemoryBackend()

    def __getattr__(self, name: str) -> Any:
        if name in ("consult", "complete_consult", "cancel_consult"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def test_backend_without_consult_keeps_hold_and_ring(db_sessions: sessionmaker[Session]) -> None:
    config = DispatcherConfig(policy=rsv.ReservationPolicy(ring_seconds=15, max_consecutive_misses=2))
    platform = Platform(db_sessions, config)
    platform.backend = HoldOnlyBackend()  # type: ignore[assignment]
    platform.backend.start(platform.bus)
    platform.dispatcher.backend = platform.backend
    assert not isinstance(platform.backend, ConsultCapable)
    call_id, a1, a2, _a3 = _connected_to_first(platform)
    record = _warm(platform, call_id, a1, a2)
    assert ("hold", call_id, True) in platform.backend.commands
    assert ("connect_agent", call_id, AgentEndpoint(a2, "sip:d1@127.0.0.1")) in platform.backend.commands
    platform.backend.agent_answers(call_id)
    assert platform.of(AgentAnswered)[-1].agent_id == a2
    platform.dispatcher.complete_warm(record.id)
    assert platform.backend.commands[-1] == ("hold", call_id, False)


def last_command(backend: MemoryBackend) -> str:
    return backend.commands[-1][0]


def test_browser_wrapper_passes_the_consultation_through(settings: Any) -> None:
    """``BrowserAgentBackend`` (a real, unstarted WebRTC gateway): a SIP-phone target is consulted on
    the wrapped backend; a browser agent without a live session is not rung (AgentNoAnswer at once);
    complete / cancel reach the wrapped backend; a wrapped backend without the power gets hold + ring."""
    from callcentre.bus import EventBus
    from telephony.webrtc.backend import BrowserAgentBackend
    from telephony.webrtc.gateway import WebRtcGateway

    inner = MemoryBackend()
    wrapped = BrowserAgentBackend(inner, WebRtcGateway(settings.webrtc))
    assert isinstance(wrapped, ConsultCapable)
    bus = EventBus()
    missed: list[AgentNoAnswer] = []
    bus.subscribe(AgentNoAnswer, missed.append)
    inner.start(bus)
    wrapped.bus = bus
    call_id = inner.place_call("5550001")
    phone = AgentEndpoint(2, "sip:agent02@127.0.0.1:5070")
    wrapped.consult(call_id, phone, 10)
    assert inner.commands[-1] == ("consult", call_id, phone) and inner.calls[call_id].consulting
    inner.agent_answers(call_id)
    wrapped.complete_consult(call_id)
    assert last_command(inner) == "complete_consult" and inner.calls[call_id].connected_agent == 2
    wrapped.cancel_consult(call_id)
    assert last_command(inner) == "cancel_consult"
    wrapped.consult(call_id, AgentEndpoint(3, "browser"), 10)
    assert [(e.call_id, e.agent_id) for e in missed] == [(call_id, 3)]

    plain = HoldOnlyBackend()
    plain_wrapped = BrowserAgentBackend(plain, WebRtcGateway(settings.webrtc))
    plain.start(bus)
    plain_wrapped.bus = bus
    other = plain.place_call("5550002")
    plain_wrapped.consult(other, phone, 10)
    assert plain.commands[-2:] == [("hold", other, True), ("connect_agent", other, phone)]
    plain_wrapped.cancel_consult(other)
    assert plain.commands[-1] == ("hold", other, False)
