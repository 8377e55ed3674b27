"""Console services on a real migrated SQLite database: screen pop, similar resolved calls, metrics
through routing.reports, ConsoleActions rules (without a dispatcher), and per-agent push channels."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from agent_console.actions import ActionError, ConsoleActions, TransferRequest
from agent_console.events import PushHub
from agent_console.services import metrics, wallboard
from agent_console.services.screen_pop import build_screen_pop
from agent_console.services.similar import find_similar
from callcentre.bus import EventBus
from callcentre.db.base import utcnow
from callcentre.db.models import Agent, Call, CallSegment, Queue, SurveyResponse
from callcentre.domain.events import CallQueued, CallTransferred
from tests.e2e.console_seed import Seeded, seed, simulated_dispatcher_offer


@pytest.fixture
def seeded(session_factory: sessionmaker[Session], tmp_path: Path) -> Seeded:
    return seed(session_factory, tmp_path / "recordings", agents=3)


@pytest.fixture
def bus() -> tuple[EventBus, list[Any]]:
    b = EventBus()
    seen: list[Any] = []
    b.subscribe(object, seen.append)
    return b, seen


def offer(sf: sessionmaker[Session], b: EventBus, seeded: Seeded, call_id: str, login: str = "agent01") -> None:
    simulated_dispatcher_offer(sf, b, call_id=call_id, agent_id=seeded.agents[login], customer_id=seeded.customer_id)


def test_screen_pop_masks_sensitive_items_and_carries_history(session_factory: Any, seeded: Seeded) -> None:
    b = EventBus()
    offer(session_factory, b, seeded, "call-pop")
    with session_factory() as db:
        pop = build_screen_pop(db, "call-pop")
        assert build_screen_pop(db, "call-nope") is None
    assert pop is not None
    items = {i["key"]: i for i in pop["ivr"]}
    assert items["pin"]["value"] == "••••" and items["pin"]["sensitive"]
    assert items["account_number"]["verified"] and not items["reason"]["verified"]
    assert pop["call"]["route_why"]["summary"].startswith("billing level 4")
    customer = pop["customer"]
    assert customer["name"] == "Kim Minji" and customer["satisfaction"] == {"mean": 5.0, "count": 1}
    (earlier,) = customer["history"]
    assert earlier["call_id"] == "call-history-1" and earlier["disposition_label"] == "Resolved"
    assert earlier["transcripts"] == ["i was charged twice on my march invoice"]
    assert earlier["recordings"] == [seeded.recording_id] and earlier["satisfaction"] == 5


def test_similar_resolved_calls_rank_by_shared_words_and_skip_unresolved(
    session_factory: Any, seeded: Seeded
) -> None:
    now = utcnow()
    with session_factory() as db:
        db.add_all([
            Call(id="c-res-words", reason="billing_question", resolved=True, arrived_at=now - timedelta(days=2),
                 wrap_up_note="Invoice double charge refunded; explained invoice dates."),
            Call(id="c-res-plain", reason="billing_question", resolved=True, arrived_at=now - timedelta(days=1),
                 wrap_up_note="Changed payment day."),
            Call(id="c-unresolved", reason="billing_question", resolved=False, arrived_at=now,
                 wrap_up_note="invoice invoice invoice"),
            Call(id="c-other-reason", reason="technical", resolved=True, arrived_at=now,
                 wrap_up_note="invoice router"),
            Call(id="c-now", reason="billing_question", arrived_at=now),
        ])
        db.commit()
        call = db.get(Call, "c-now")
        assert call is not None
        found = [s.call_id for s in find_similar(db, call, text="double charge on my invoice")]
    # Both earlier double-charge solutions share three words with this call; the payment-day one none.
    assert set(found[:2]) == {"c-res-words", "call-history-1"} and found[2] == "c-res-plain"
    assert "c-unresolved" not in found and "c-other-reason" not in found


def test_metrics_come_from_routing_reports_with_abandoned_calls_as_misses(session_factory: Any) -> None:
    now = utcnow()
    with session_factory() as db:
        q = Queue(name="billing", sl_target_seconds=20)
        db.add(q)
        db.flush()
        t = now - timedelta(minutes=10)
        db.add_all([
            Call(id="fast", queue_id=q.id, queued_at=t, answered_at=t + timedelta(seconds=5), resolved=True),
            Call(id="slow", queue_id=q.id, queued_at=t, answered_at=t + timedelta(seconds=45)),
            Call(id="gave-up", queue_id=q.id, queued_at=t, ended_at=t + timedelta(seconds=30), outcome="abandoned",
                 state="ended"),
            Call(id="waiting", queue_id=q.id, queued_at=now - timedelta(seconds=70), state="queued"),
        ])
        db.add_all([CallSegment(call_id="fast", started_at=t), CallSegment(call_id="slow", started_at=t)])
        db.commit()
        m = metrics.queue_metrics(db, q, now - timedelta(hours=1), now)
        snap = wallboard.snapshot(db, now=now)
    assert (m["offered"], m["answered"], m["abandoned"]) == (4, 2, 1)
    assert m["service_level"] == 0.25  # 1 of 4 offered within 20 s; the abandoned call is a miss
    assert m["asa_seconds"] == 25.0 and m["abandonment"] == 0.25
    billing = snap["queues"][0]
    assert billing["waiting"] == 1 and billing["longest_wait_seconds"] >= 70
    assert billing["staffing"]["agents_needed"] >= 1 and billing["staffing"]["method"] == "erlang_c"


def test_fcr_counts_the_callers_survey_answer(session_factory: Any) -> None:
    """An agent may mark a call resolved, but a caller who answers "not solved" in the survey makes it
    a first-contact miss (issue 5: survey answers feed FCR)."""
    now = utcnow()
    t = now - timedelta(minutes=10)
    with session_factory() as db:
        q = Queue(name="technical", sl_target_seconds=20)
        db.add(q)
        db.flush()
        db.add_all([Call(id=f"c{i}", queue_id=q.id, queued_at=t, answered_at=t + timedelta(seconds=3), resolved=True)
                    for i in range(4)])
        db.add_all([CallSegment(call_id=f"c{i}", started_at=t) for i in range(4)])
        db.add_all([SurveyResponse(call_id="c0", score=2, solved=False, completed=True),
                    SurveyResponse(call_id="c1", score=5, solved=True, completed=True)])
        db.commit()
        m = metrics.queue_metrics(db, q, now - timedelta(hours=1), now)
    assert m["answered"] == 4
    assert m["fcr"] == 0.75
    assert m["csat_mean"] == 3.5


def test_agent_state_rules(session_factory: Any, seeded: Seeded, bus: tuple[EventBus, list[Any]]) -> None:
    b, _ = bus
    actions = ConsoleActions(session_factory, b)
    me = seeded.agents["agent01"]
    with pytest.raises(ActionError, match="reason"):
        actions.set_state(me, "not_ready")
    with pytest.raises(ActionError, match="available or not_ready"):
        actions.set_state(me, "on_call")
    assert actions.set_state(me, "not_ready", "lunch")["reason"] == "lunch"
    actions.set_state(me, "available")
    offer(session_factory, b, seeded, "call-rules")
    with pytest.raises(ActionError, match="finish the call"):
        actions.set_state(me, "not_ready", "break")
    actions.answer(me, "call-rules")
    actions.hangup(me, "call-rules")
    with pytest.raises(ActionError, match="wrap-up first"):
        actions.set_state(me, "available")
    with pytest.raises(ActionError, match="disposition"):
        actions.wrap_up(me, "call-rules", "nonsense", True, "")
    actions.wrap_up(me, "call-rules", "resolved", True, "ok")
    with session_factory() as db:
        call = db.get(Call, "call-rules")
        assert call is not None and (call.state, call.outcome, call.resolved) == ("ended", "resolved", True)


@pytest.mark.parametrize("change, message", [
    ({"reason": " "}, "reason"),
    ({"note": ""}, "note"),
    ({"target": ""}, "where"),
    ({"kind": "sideways"}, "kind"),
    ({"target_type": "number", "target": "12ab"}, "digits"),
    ({"target_type": "number", "target": "123", "kind": "warm"}, "blind"),
])
def test_transfer_requests_are_checked_before_anything_changes(change: dict[str, str], message: str) -> None:
    base = {"kind": "blind", "target_type": "agent", "target": "agent02", "reason": "billing", "note": "n"}
    with pytest.raises(ActionError, match=message):
        TransferRequest(**{**base, **change}).validate()


def test_transfer_to_queue_requeues_with_context(
    session_factory: Any, seeded: Seeded, bus: tuple[EventBus, list[Any]]
) -> None:
    b, seen = bus
    actions = ConsoleActions(session_factory, b)
    me = seeded.agents["agent01"]
    offer(session_factory, b, seeded, "call-q")
    actions.answer(me, "call-q")
    actions.transfer(me, "call-q", TransferRequest("blind", "queue", "technical", "wrong queue", "Router issue."))
    queued = [e for e in seen if isinstance(e, CallQueued)]
    moved = [e for e in seen if isinstance(e, CallTransferred)]
    assert queued[-1].queue == "technical" and queued[-1].required_skills == (("technical", 2),)
    assert moved[-1].note == "Router issue." and moved[-1].reason == "wrong queue"
    with session_factory() as db:
        call = db.get(Call, "call-q")
        agent = db.get(Agent, me)
        assert call is not None and agent is not None
        assert call.state == "queued" and agent.state == "wrap_up"
        assert len(call.context_items) == 4  # nothing collected again


def test_warm_transfer_completes_when_the_target_answers(
    session_factory: Any, seeded: Seeded, bus: tuple[EventBus, list[Any]]
) -> None:
    b, _ = bus
    actions = ConsoleActions(session_factory, b)
    one, two = seeded.agents["agent01"], seeded.agents["agent02"]
    offer(session_factory, b, seeded, "call-warm")
    actions.answer(one, "call-warm")
    actions.transfer(one, "call-warm", TransferRequest("warm", "agent", "agent02", "specialist", "Over to you."))
    with session_factory() as db:
        assert db.get(Agent, one).state == "on_call"  # type: ignore[union-attr]
        assert db.get(Agent, two).state == "ringing"  # type: ignore[union-attr]
    actions.answer(two, "call-warm")
    with session_factory() as db:
        legs = db.scalars(select(CallSegment).where(CallSegment.call_id == "call-warm").order_by(CallSegment.id)).all()
        assert [(s.agent_id, s.end_reason) for s in legs] == [(one, "transferred"), (two, "")]
        assert db.get(Agent, one).state == "wrap_up"  # type: ignore[union-attr]
        assert db.get(Agent, two).state == "on_call"  # type: ignore[union-attr]


def test_caller_hang_up_moves_the_agent_to_wrap_up(
    session_factory: Any, seeded: Seeded, bus: tuple[EventBus, list[Any]]
) -> None:
    from callcentre.domain.events import CallHungUp

    b, _ = bus
    actions = ConsoleActions(session_factory, b)
    me = seeded.agents["agent01"]
    offer(session_factory, b, seeded, "call-gone")
    actions.answer(me, "call-gone")
    b.publish(CallHungUp("call-gone", by="caller"))
    with session_factory() as db:
        assert db.get(Agent, me).state == "wrap_up"  # type: ignore[union-attr]
        current = actions.current_call(db, me)
        assert current is not None and current.ended and current.call_id == "call-gone"


def test_push_channels_are_per_agent(session_factory: Any, seeded: Seeded) -> None:
    b = EventBus()
    hub = PushHub()
    hub.attach(b)
    one = hub.subscribe(seeded.agents["agent01"], supervisor=False)
    two = hub.subscribe(seeded.agents["agent02"], supervisor=False)
    boss = hub.subscribe(seeded.agents["supervisor"], supervisor=True)
    offer(session_factory, b, seeded, "call-push")
    assert one.messages.get_nowait()["type"] == "offer"
    assert two.messages.empty()
    assert boss.messages.get_nowait() == {"type": "calls", "data": {"call_id": "call-push", "event": "offered"}}
    hub.unsubscribe(one)
    assert hub.connected() == 2


def test_a_stalled_tab_cannot_grow_memory_and_shutdown_ends_every_stream() -> None:
    from agent_console.events import MAX_PENDING

    hub = PushHub()
    stalled = hub.subscribe(7, supervisor=False)
    for i in range(MAX_PENDING + 25):
        hub.to_agent(7, "state", {"n": i})
    assert stalled.messages.qsize() == MAX_PENDING and stalled.dropped == 25
    fresh = hub.subscribe(8, supervisor=True)
    hub.close()
    assert hub.closed and fresh.messages.get_nowait()["type"] == "__close__"
