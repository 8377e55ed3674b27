"""The dispatcher's router learns who resolves what from the calls table (FCR as docs/metrics.md
defines it), and prefers the better resolver among equally skilled agents."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from callcentre.db.models import Call, CallSegment, Customer
from routing import history
from routing import reservations as rsv
from routing.dispatcher import DispatcherConfig
from tests.integration.test_dispatcher import Platform, _seed


def _past_call(
    s: Session, call_id: str, customer: int, reason: str, resolved: bool | None, at: object, agents: list[int]
) -> None:
    s.add(
        Call(
            id=call_id,
            customer_id=customer,
            reason=reason,
            resolved=resolved,
            state="ended",
            arrived_at=at,
            answered_at=at,
        )
    )
    for i, agent in enumerate(agents):
        s.add(CallSegment(call_id=call_id, agent_id=agent, offered_at=at, started_at=at + timedelta(minutes=i)))


def test_first_contact_outcomes_and_routing_by_them(session_factory: sessionmaker[Session]) -> None:
    config = DispatcherConfig(policy=rsv.ReservationPolicy(15, 3))
    platform = Platform(session_factory, config)
    poor, good = _seed(platform.sessions, [4, 4])  # poor has been idle longer: only history favours good
    now = platform.clock.now
    with platform.sessions() as s:
        customers = [Customer(name=f"C{i}") for i in range(12)]
        s.add_all(customers)
        s.flush()
        old = now - timedelta(days=10)
        for i in range(5):
            _past_call(s, f"call-g{i}", customers[i].id, "billing", True, old, [good])  # resolved, no repeat
            _past_call(s, f"call-p{i}", customers[5 + i % 5].id, "billing", True, old, [poor])
            # ...but each of poor's customers called again about it two days later
            s.add(
                Call(
                    id=f"call-r{i}",
                    customer_id=customers[5 + i % 5].id,
                    reason="billing",
                    state="ended",
                    arrived_at=old + timedelta(days=2),
                )
            )
        _past_call(s, "call-t", customers[10].id, "billing", True, old, [poor, good])  # transferred
        _past_call(s, "call-new", customers[11].id, "billing", True, now - timedelta(days=1), [poor])  # too early
        s.commit()
        outcomes = history.first_contact_outcomes(s, now=now)
    assert sorted(outcomes) == sorted([(str(good), "billing", True)] * 5 + [(str(poor), "billing", False)] * 6)
    call_id = platform.arrive()  # reason "billing" (see Platform.arrive)
    assert platform.ringing(call_id) == good
