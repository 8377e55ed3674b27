"""Transfers carry the CallContext, the first agent's reason code and note; each one is counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from callcentre.db.models import Agent, Call, CallContextItem, CallSegment, QueueEntry, TransferRecord
from routing import reservations as rsv
from routing import transfers as tr

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
POLICY = rsv.ReservationPolicy(ring_seconds=15, max_consecutive_misses=3)


def _setup(session: Session, agents: int = 3) -> tuple[str, list[int]]:
    rows = [Agent(login=f"t{i}", name=f"T{i}", password_hash="-", state="available") for i in range(agents)]
    session.add_all(rows)
    session.add(Call(id="call-x", state="queued", reason="billing_dispute", language="en"))
    session.flush()
    session.add_all(
        [
            CallContextItem(call_id="call-x", key="customer_id", value="17", step="identify", verified=True),
            CallContextItem(call_id="call-x", key="account_number", value="ACC-0042", step="identify"),
            CallContextItem(call_id="call-x", key="pin", value="****42", step="verify", sensitive=True),
        ]
    )
    rsv.enqueue(session, "call-x", "billing", now=T0, required_skills=[("billing", 3)])
    first = rows[0].id
    assert rsv.reserve(session, "call-x", first, now=T0, policy=POLICY) is not None
    assert rsv.answered(session, "call-x", first, now=T0 + timedelta(seconds=3)) is not None
    session.commit()
    return "call-x", [a.id for a in rows]


def _free(session: Session, agent_id: int) -> None:
    session.execute(update(Agent).where(Agent.id == agent_id).values(state="available"))


@pytest.mark.parametrize(
    ("kind", "target_type", "target", "message"),
    [
        ("sideways", "agent", "2", "unknown transfer kind"),
        ("warm", "queue", "billing", "warm transfer goes to agent"),
        ("queue", "number", "+1555", "queue transfer goes to queue"),
        ("blind", "agent", "bob", "agent id"),
        ("blind", "queue", "   ", "needs a target"),
    ],
)
def test_bad_requests_get_a_clear_answer(kind: str, target_type: str, target: str, message: str) -> None:
    with pytest.raises(tr.TransferError, match=message):
        tr.validate(tr.TransferRequest("call-x", 1, kind, target_type, target, "wrong_queue"))


def test_reason_code_is_required(session: Session) -> None:
    call_id, (a1, a2, _a3) = _setup(session)
    with pytest.raises(tr.TransferError, match="reason code"):
        tr.start(session, tr.TransferRequest(call_id, a1, "blind", "agent", str(a2), "  "), now=T0, policy=POLICY)
    with pytest.raises(tr.TransferError, match="not on this call"):
        tr.start(session, tr.TransferRequest(call_id, a2, "blind", "agent", str(a1), "x"), now=T0, policy=POLICY)
    with pytest.raises(tr.TransferError, match="yourself"):
        tr.start(session, tr.TransferRequest(call_id, a1, "blind", "agent", str(a1), "x"), now=T0, policy=POLICY)
    assert session.scalars(select(TransferRecord)).all() == []


def test_blind_transfer_to_agent_then_queue_carries_everything(session: Session) -> None:
    call_id, (a1, a2, a3) = _setup(session)
    t1 = T0 + timedelta(minutes=2)
    record, offer = tr.start(
        session,
        tr.TransferRequest(call_id, a1, "blind", "agent", str(a2), "needs_refund_rights", "Customer disputes a fee"),
        now=t1,
        policy=POLICY,
    )
    session.commit()
    assert offer is not None and offer.agent_id == a2
    assert session.get(Agent, a1).state == "wrap_up"  # type: ignore[union-attr]
    assert session.get(Agent, a2).state == "ringing"  # type: ignore[union-attr]
    rsv.answered(session, call_id, a2, now=t1 + timedelta(seconds=5))
    tr.on_answered(session, call_id, a2, now=t1 + timedelta(seconds=5))
    session.commit()
    assert record.status == "completed" and record.to_agent_id == a2
    # Second hop, to a queue: the FIRST agent's reason and note still travel.
    t2 = t1 + timedelta(minutes=3)
    tr.start(
        session,
        tr.TransferRequest(call_id, a2, "queue", "queue", "retention", "wants_to_cancel", "Offer plan B"),
        now=t2,
        policy=POLICY,
    )
    session.commit()
    entry = session.scalars(select(QueueEntry).where(QueueEntry.call_id == call_id)).one()
    assert (entry.queue, entry.status, entry.priority) == ("retention", "waiting", tr.QUEUE_TRANSFER_PRIORITY_BOOST)
    assert session.get(Call, call_id).state == "queued"  # type: ignore[union-attr]
    _free(session, a3)
    assert rsv.reserve(session, call_id, a3, now=t2 + timedelta(seconds=10), policy=POLICY) is not None
    rsv.answered(session, call_id, a3, now=t2 + timedelta(seconds=12))
    tr.on_answered(session, call_id, a3, now=t2 + timedelta(seconds=12))
    session.commit()

    seen = tr.handover(session, call_id)
    assert seen.first_reason == "needs_refund_rights"
    assert [(t.kind, t.reason, t.note, t.from_agent_id, t.to_agent_id) for t in seen.transfers] == [
        ("blind", "needs_refund_rights", "Customer disputes a fee", a1, a2),
        ("queue", "wants_to_cancel", "Offer plan B", a2, a3),
    ]
    assert {i.key: i.value for i in seen.context} == {
        "customer_id": "17",
        "account_number": "ACC-0042",
        "pin": "****42",
    }
    assert [(leg.agent_id, leg.end_reason) for leg in seen.legs] == [(a1, "transferred"), (a2, "transferred"), (a3, "")]
    assert seen.reason == "billing_dispute"
    segments = session.scalars(select(CallSegment).where(CallSegment.call_id == call_id).order_by(CallSegment.id)).all()
    assert (segments[0].transfer_reason, segments[0].transfer_note) == (
        "needs_refund_rights",
        "Customer disputes a fee",
    )
    assert tr.transfer_counts(session) == {("blind", "needs_refund_rights"): 1, ("queue", "wants_to_cancel"): 1}
    assert seen.as_dict()["transfers"][0]["note"] == "Customer disputes a fee"


def test_blind_transfer_to_busy_agent_is_refused_and_nothing_is_lost(session: Session) -> None:
    call_id, (a1, a2, _a3) = _setup(session)
    session.execute(update(Agent).where(Agent.id == a2).values(state="on_call"))
    session.commit()
    with pytest.raises(tr.TransferError, match="not available"):
        tr.start(session, tr.TransferRequest(call_id, a1, "blind", "agent", str(a2), "x"), now=T0, policy=POLICY)
    session.rollback()
    assert session.scalars(select(TransferRecord)).all() == []
    assert session.get(Call, call_id).state == "connected"  # type: ignore[union-attr]
    assert session.get(Agent, a1).state == "on_call"  # type: ignore[union-attr]


def test_warm_transfer_consult_then_complete(session: Session) -> None:
    call_id, (a1, a2, _a3) = _setup(session)
    record, offer = tr.start(
        session,
        tr.TransferRequest(call_id, a1, "warm", "agent", str(a2), "tech_issue", "router"),
        now=T0 + timedelta(minutes=1),
        policy=POLICY,
    )
    assert offer is not None and record.status == "consulting"
    with pytest.raises(tr.TransferError, match="not answered yet"):
        tr.complete_warm(session, record.id, now=T0 + timedelta(minutes=1))
    rsv.answered(session, call_id, a2, now=T0 + timedelta(minutes=1, seconds=4))
    tr.on_answered(session, call_id, a2, now=T0 + timedelta(minutes=1, seconds=4))
    assert session.get(Agent, a1).state == "on_call"  # type: ignore[union-attr]  # still with the caller
    tr.complete_warm(session, record.id, now=T0 + timedelta(minutes=2))
    session.commit()
    assert record.status == "completed"
    assert session.get(Agent, a1).state == "wrap_up"  # type: ignore[union-attr]
    legs = tr.handover(session, call_id).legs
    assert [(leg.agent_id, leg.end_reason, leg.ended_at is None) for leg in legs] == [
        (a1, "transferred", False),
        (a2, "", True),
    ]
    assert tr.transfer_counts(session) == {("warm", "tech_issue"): 1}


def test_warm_transfer_returned_keeps_the_first_agent(session: Session) -> None:
    call_id, (a1, a2, _a3) = _setup(session)
    record, _offer = tr.start(
        session,
        tr.TransferRequest(call_id, a1, "warm", "agent", str(a2), "tech_issue"),
        now=T0 + timedelta(minutes=1),
        policy=POLICY,
    )
    with pytest.raises(tr.TransferError, match="already in progress"):
        tr.start(
            session,
            tr.TransferRequest(call_id, a1, "warm", "agent", str(a2), "again"),
            now=T0 + timedelta(minutes=1),
            policy=POLICY,
        )
    tr.return_warm(session, record.id, now=T0 + timedelta(minutes=1, seconds=20))  # still ringing
    session.commit()
    assert record.status == "returned"
    assert session.get(Agent, a2).state == "available"  # type: ignore[union-attr]
    assert session.get(Call, call_id).state == "connected"  # type: ignore[union-attr]
    assert rsv.double_assignments(session) == (0, 0)
    assert tr.transfer_counts(session) == {}
    assert tr.transfer_counts(session, include_returned=True) == {("warm", "tech_issue"): 1}


def test_blind_transfer_to_number_ends_our_part(session: Session) -> None:
    call_id, (a1, _a2, _a3) = _setup(session)
    record, offer = tr.start(
        session,
        tr.TransferRequest(call_id, a1, "blind", "number", "+15550100", "partner"),
        now=T0 + timedelta(minutes=1),
        policy=POLICY,
    )
    session.commit()
    call = session.get(Call, call_id)
    assert offer is None and record.status == "completed"
    assert call is not None and call.state == "ended" and call.outcome == "transferred_out"
