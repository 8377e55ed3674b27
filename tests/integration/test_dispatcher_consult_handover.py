"""The FIRST agent hanging up during a warm transfer's consultation hands the caller over ("attended
transfer on hang-up") instead of ending the call. Through the real dispatcher and bus, the in-process
memory backend (:class:`telephony.base.ConsultCapable`) and a real SQLite database:

* the consulted agent already answered → recorded exactly like ``complete_warm``;
* the consulted agent still rings → the caller waits on hold for them; their answer completes it;
* they never answer (rejected, or the offer times out on the tick) → the caller is back in the queue
  at the ORIGINAL place, the transfer is recorded ``failed`` and its reason and note reach the next agent;
* the caller hanging up at any point ends everything and frees the agents.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from agent_console.events import PushHub, Subscriber
from callcentre.db.models import Agent, Call, CallSegment, QueueEntry, TransferRecord
from callcentre.domain.events import (
    AgentAnswered,
    AgentNoAnswer,
    AgentStateChanged,
    CallEnded,
    CallHungUp,
    ConsultHandedOver,
)
from routing import reservations as rsv
from routing import transfers as tr
from routing.dispatcher import DispatcherConfig
from tests.integration.test_dispatcher import Platform, _seed


@pytest.fixture
def platform(session_factory: sessionmaker[Session]) -> Platform:
    # One miss sets an agent Not Ready, so a consulted agent who did not answer is not offered the next
    # caller at once and the queue's order can be read as it is.
    return Platform(session_factory, DispatcherConfig(policy=rsv.ReservationPolicy(15, 1)))


def _consulting(platform: Platform, *, answered: bool) -> tuple[str, datetime, int, int, int, int]:
    """Caller connected to a1; a3 off duty; warm transfer to a2 (answered or still ringing)."""
    a1, a2, a3 = _seed(platform.sessions, [5, 4, 3])
    _set_state(platform, a3, "not_ready")
    queued_at = platform.clock()
    call_id = platform.arrive()
    assert platform.ringing(call_id) == a1
    platform.backend.agent_answers(call_id)
    platform.clock.advance(30)
    record = platform.dispatcher.transfer(
        tr.TransferRequest(call_id, a1, "warm", "agent", str(a2), "billing-dispute", "customer disputes fee")
    )
    assert platform.ringing(call_id) == a2 and platform.backend.calls[call_id].consulting
    if answered:
        platform.clock.advance(2)
        platform.backend.agent_answers(call_id)
        assert platform.backend.calls[call_id].consulted_agent == a2
    platform.clock.advance(5)
    return call_id, queued_at, record.id, a1, a2, a3


def _set_state(platform: Platform, agent_id: int, state: str) -> None:
    with platform.sessions() as s:
        s.execute(update(Agent).where(Agent.id == agent_id).values(state=state))
        s.commit()


def _open_segments(platform: Platform, call_id: str) -> set[int | None]:
    with platform.sessions() as s:
        return set(
            s.scalars(
                select(CallSegment.agent_id).where(
                    CallSegment.call_id == call_id, CallSegment.started_at.is_not(None), CallSegment.ended_at.is_(None)
                )
            )
        )


def _pushed(sub: Subscriber) -> list[tuple[str, Any]]:
    out = []
    while not sub.messages.empty():
        message = sub.messages.get_nowait()
        out.append((message["type"], message["data"].get("state")))
    return out


def _record(platform: Platform, transfer_id: int) -> TransferRecord:
    with platform.sessions() as s:
        record = s.get(TransferRecord, transfer_id)
        assert record is not None
        return record


def _first_segment(platform: Platform, call_id: str, agent_id: int) -> CallSegment:
    with platform.sessions() as s:
        return s.scalars(
            select(CallSegment).where(CallSegment.call_id == call_id, CallSegment.agent_id == agent_id)
        ).one()


def test_first_agent_hangs_up_after_the_consulted_agent_answered(platform: Platform) -> None:
    call_id, _q, transfer_id, a1, a2, _a3 = _consulting(platform, answered=True)
    hub = PushHub()  # the agent consoles' live push, on the same bus
    hub.attach(platform.bus)
    screen_a1, screen_a2 = hub.subscribe(a1, supervisor=False), hub.subscribe(a2, supervisor=False)
    platform.backend.agent_hangs_up(call_id)
    # what the console's Complete button pushes: each agent's new state (the page then re-reads its call)
    assert _pushed(screen_a1) == [("state", "wrap_up")] and _pushed(screen_a2) == [("state", "on_call")]
    call = platform.backend.calls[call_id]
    assert not call.ended and (call.connected_agent, call.on_hold, call.consulting) == (a2, False, False)
    assert platform.of(CallHungUp) == [] and platform.of(CallEnded) == []
    assert [(e.from_agent_id, e.to_agent_id, e.answered) for e in platform.of(ConsultHandedOver)] == [(a1, a2, True)]
    # exactly what complete_warm records
    record = _record(platform, transfer_id)
    assert (record.status, record.to_agent_id, record.completed_at is not None) == ("completed", a2, True)
    first = _first_segment(platform, call_id, a1)
    assert (first.end_reason, first.transfer_kind, first.transfer_reason) == ("transferred", "warm", "billing-dispute")
    assert _open_segments(platform, call_id) == {a2}
    assert platform.agent(a1).state == "wrap_up" and platform.agent(a2).state == "on_call"
    with platform.sessions() as s:
        db_call = s.get(Call, call_id)
        assert db_call is not None and db_call.state == "connected"
    # the consoles are told, as the Complete button tells them
    states = [(e.agent_id, e.state) for e in platform.of(AgentStateChanged)]
    assert states[-2:] == [(a1, "wrap_up"), (a2, "on_call")]
    # later the caller hangs up: an ordinary end with the second agent
    platform.backend.caller_hangs_up(call_id)
    assert platform.agent(a2).state == "wrap_up" and _open_segments(platform, call_id) == set()
    assert platform.of(CallEnded)[-1].outcome == "completed"


def test_first_agent_hangs_up_while_the_consulted_agent_rings_then_they_answer(platform: Platform) -> None:
    call_id, _q, transfer_id, a1, a2, _a3 = _consulting(platform, answered=False)
    platform.backend.agent_hangs_up(call_id)
    call = platform.backend.calls[call_id]
    # the caller is kept, held, waiting for a2; a1 is gone and wrapping up
    assert not call.ended and call.on_hold and call.connected_agent is None and platform.ringing(call_id) == a2
    assert platform.of(CallHungUp) == []
    assert [(e.to_agent_id, e.answered) for e in platform.of(ConsultHandedOver)] == [(a2, False)]
    assert platform.agent(a1).state == "wrap_up" and platform.agent(a2).state == "ringing"
    assert _first_segment(platform, call_id, a1).end_reason == "transferred"
    assert _record(platform, transfer_id).status == "requested"
    platform.clock.advance(3)
    platform.backend.agent_answers(call_id)
    assert (call.connected_agent, call.on_hold, call.consulting) == (a2, False, False)
    assert platform.of(AgentAnswered)[-1].agent_id == a2
    assert [(e.to_agent_id, e.answered) for e in platform.of(ConsultHandedOver)][-1] == (a2, True)
    record = _record(platform, transfer_id)
    assert (record.status, record.to_agent_id) == ("completed", a2)
    assert _open_segments(platform, call_id) == {a2}
    assert platform.agent(a2).state == "on_call" and platform.agent(a1).state == "wrap_up"


def _second_caller(platform: Platform) -> str:
    platform.clock.advance(1)
    other = platform.arrive(caller="+15550001")
    assert platform.ringing(other) is None  # nobody free: it waits behind... the first caller, later
    return other


def _back_in_queue(platform: Platform, call_id: str, other: str, queued_at: datetime, transfer_id: int) -> None:
    call = platform.backend.calls[call_id]
    assert not call.ended and call.connected_agent is None and platform.of(CallHungUp) == []
    assert platform.places() == [call_id, other]  # the ORIGINAL place: ahead of the later caller
    with platform.sessions() as s:
        entry = s.scalars(select(QueueEntry).where(QueueEntry.call_id == call_id)).one()
        assert entry.enqueued_at == queued_at and entry.status == "waiting"
        assert entry.required_skills == [["billing", 2]]
        db_call = s.get(Call, call_id)
        assert db_call is not None and db_call.state == "queued"
    record = _record(platform, transfer_id)
    assert record.status == "failed" and (record.reason, record.note) == ("billing-dispute", "customer disputes fee")
    assert tr.transfer_counts(platform.sessions()).get(("warm", "billing-dispute"), 0) == 0


def test_consulted_agent_never_answers_the_caller_goes_back_to_the_original_place(platform: Platform) -> None:
    call_id, queued_at, transfer_id, a1, a2, a3 = _consulting(platform, answered=False)
    other = _second_caller(platform)
    platform.backend.agent_hangs_up(call_id)
    platform.backend.agent_rejects(call_id)
    assert platform.of(AgentNoAnswer)[-1].agent_id == a2
    _back_in_queue(platform, call_id, other, queued_at, transfer_id)
    # the next free agent gets the first caller (not a1, who passed it on) and sees the whole story
    platform.free(a3)
    assert platform.ringing(call_id) == a3 and platform.ringing(other) is None
    platform.backend.agent_answers(call_id)
    assert platform.backend.calls[call_id].connected_agent == a3 and not platform.backend.calls[call_id].on_hold
    with platform.sessions() as s:
        seen = tr.handover(s, call_id)
    assert seen.first_reason == "billing-dispute"
    assert [(t.status, t.note) for t in seen.transfers] == [("failed", "customer disputes fee")]
    assert [leg.end_reason for leg in seen.legs if leg.agent_id == a1] == ["transferred"]
    assert platform.agent(a3).state == "on_call" and platform.agent(a1).state == "wrap_up"


def test_handover_offer_timing_out_on_the_tick_also_requeues(platform: Platform) -> None:
    """The backend never reported: the consulted agent's reservation expires on the dispatcher's tick."""
    call_id, queued_at, transfer_id, _a1, a2, _a3 = _consulting(platform, answered=False)
    other = _second_caller(platform)
    platform.backend.agent_hangs_up(call_id)
    platform.clock.advance(16)
    platform.dispatcher.tick()
    assert platform.agent(a2).state == "not_ready"
    _back_in_queue(platform, call_id, other, queued_at, transfer_id)


def test_caller_hangs_up_while_the_handover_rings(platform: Platform) -> None:
    call_id, _q, _t, a1, a2, _a3 = _consulting(platform, answered=False)
    platform.backend.agent_hangs_up(call_id)
    platform.backend.caller_hangs_up(call_id)
    assert platform.backend.calls[call_id].ended
    assert platform.agent(a2).state == "available" and platform.agent(a1).state == "wrap_up"
    assert _open_segments(platform, call_id) == set()
    with platform.sessions() as s:
        assert rsv.active_reservation(s, call_id) is None
        db_call = s.get(Call, call_id)
        assert db_call is not None and db_call.state == "ended"


def test_caller_hangs_up_during_the_consultation(platform: Platform) -> None:
    call_id, _q, _t, a1, a2, _a3 = _consulting(platform, answered=True)
    platform.backend.caller_hangs_up(call_id)
    assert platform.of(ConsultHandedOver) == []
    assert _open_segments(platform, call_id) == set()
    assert platform.agent(a1).state == "wrap_up" and platform.agent(a2).state == "wrap_up"
    with platform.sessions() as s:
        db_call = s.get(Call, call_id)
        assert db_call is not None and db_call.state == "ended"
