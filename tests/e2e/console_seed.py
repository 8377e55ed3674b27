"""Data for the console tests: a small centre (queues, skills, dispositions, agents, customers with
history) and a stand-in for the dispatcher's offer step, named as such.

Passwords are hashed with the project's real argon2 hasher; everything is written through the
real models into a real (SQLite) database migrated by Alembic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from callcentre.bus import EventBus
from callcentre.db.base import utcnow
from callcentre.db.models import (
    Agent,
    AgentSkill,
    Call,
    CallContextItem,
    CallSegment,
    Customer,
    CustomerPhone,
    Disposition,
    Queue,
    Recording,
    Skill,
    SurveyResponse,
    Transcript,
)
from callcentre.db.session import session_scope
from callcentre.domain.events import CallOffered
from callcentre.passwords import hash_password

PASSWORD = "test-pass-123"


@dataclass(frozen=True)
class Seeded:
    agents: dict[str, int]
    customer_id: int
    other_customer_id: int
    history_call_id: str
    recording_id: int
    other_recording_id: int


def seed(session_factory: sessionmaker[Session], recordings_dir: Path, *, agents: int = 3) -> Seeded:
    pw = hash_password(PASSWORD)
    now = utcnow()
    recordings_dir.mkdir(parents=True, exist_ok=True)
    with session_scope(session_factory) as db:
        billing, tech = Skill(name="billing"), Skill(name="technical")
        db.add_all([billing, tech])
        db.add_all(
            [
                Queue(name="general", description="Anything else"),
                Queue(name="billing", required_skills=[{"skill": "billing", "min_level": 2}]),
                Queue(name="technical", required_skills=[{"skill": "technical", "min_level": 2}]),
                Disposition(code="resolved", label="Resolved", resolved=True),
                Disposition(code="callback", label="Callback needed", resolved=False),
                Disposition(code="escalated", label="Escalated", resolved=False),
            ]
        )
        db.flush()
        ids: dict[str, int] = {}
        for n in range(1, agents + 1):
            a = Agent(
                login=f"agent{n:02d}",
                name=f"Agent {n:02d}",
                password_hash=pw,
                role="agent",
                state="available",
                sip_contact="",
            )
            a.skills = [
                AgentSkill(skill_id=billing.id, proficiency=4),
                AgentSkill(skill_id=tech.id, proficiency=3),
            ]
            db.add(a)
            db.flush()
            ids[a.login] = a.id
        for login, role in (("supervisor", "supervisor"), ("admin", "admin")):
            a = Agent(login=login, name=login.title(), password_hash=pw, role=role, state="logged_out")
            db.add(a)
            db.flush()
            ids[login] = a.id
        cust = Customer(
            name="Kim Minji",
            account_number="ACC-1001",
            tier="gold",
            language="en",
            notes="Prefers email follow-up.",
            pin_hash=None,
        )
        cust.phones = [CustomerPhone(number="+8210555001", label="mobile")]
        other = Customer(name="Lee Jun", account_number="ACC-2002", tier="standard")
        other.phones = [CustomerPhone(number="+8210555002", label="home")]
        db.add_all([cust, other])
        db.flush()
        billing_q = db.query(Queue).filter_by(name="billing").one()
        hist = Call(
            id="call-history-1",
            caller_id="+8210555001",
            customer_id=cust.id,
            queue_id=billing_q.id,
            reason="billing_question",
            state="ended",
            outcome="resolved",
            disposition="resolved",
            resolved=True,
            wrap_up_note="[agent02] Refunded the double charge on the March invoice.",
            arrived_at=now - timedelta(days=3),
            queued_at=now - timedelta(days=3),
            answered_at=now - timedelta(days=3) + timedelta(seconds=12),
            ended_at=now - timedelta(days=3, minutes=-5),
        )
        db.add(hist)
        db.add(
            CallSegment(
                call_id=hist.id,
                agent_id=ids.get("agent02", ids["agent01"]),
                queue_id=billing_q.id,
                offered_at=hist.arrived_at,
                started_at=hist.answered_at,
                ended_at=hist.ended_at,
                end_reason="completed",
            )
        )
        other_call = Call(
            id="call-other-1",
            caller_id="+8210555002",
            customer_id=other.id,
            reason="technical",
            state="ended",
            outcome="resolved",
            resolved=True,
            arrived_at=now - timedelta(days=1),
        )
        db.add(other_call)
        db.add(
            CallSegment(
                call_id=other_call.id,
                agent_id=ids.get("agent03", ids["agent01"]),
                offered_at=other_call.arrived_at,
                started_at=other_call.arrived_at,
                ended_at=other_call.arrived_at,
                end_reason="completed",
            )
        )
        db.flush()
        wav = recordings_dir / "history-1.wav"
        _silence(wav)
        rec = Recording(call_id=hist.id, path=str(wav), duration_seconds=0.1)
        rec2 = Recording(call_id=other_call.id, path=str(wav), duration_seconds=0.1)
        db.add_all([rec, rec2])
        db.flush()
        db.add(
            Transcript(
                call_id=hist.id,
                recording_id=rec.id,
                language="en",
                text="i was charged twice on my march invoice",
            )
        )
        db.add(
            SurveyResponse(
                call_id=hist.id, customer_id=cust.id, agent_id=ids.get("agent02"), score=5, completed=True
            )
        )
        return Seeded(ids, cust.id, other.id, hist.id, rec.id, rec2.id)


def _silence(path: Path) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 800)


def simulated_dispatcher_offer(
    session_factory: sessionmaker[Session],
    bus: EventBus,
    *,
    call_id: str,
    agent_id: int,
    customer_id: int | None,
    queue: str = "billing",
    reason: str = "billing_question",
    caller_id: str = "+8210555001",
) -> None:
    """Do what the dispatcher does when it reserves an agent: call queued → offered, segment opened,
    agent ringing, route_why written, ``CallOffered`` published. Stands in until routing/dispatcher.py
    is wired into the test platform."""
    now = utcnow()
    with session_scope(session_factory) as db:
        q = db.query(Queue).filter_by(name=queue).one()
        call = Call(
            id=call_id,
            caller_id=caller_id,
            customer_id=customer_id,
            queue_id=q.id,
            reason=reason,
            state="offering",
            arrived_at=now - timedelta(seconds=40),
            queued_at=now - timedelta(seconds=9),
            required_skills=[["billing", 2]],
            route_why={
                "summary": "billing level 4 ≥ 2; best resolution rate for billing_question",
                "relaxation_step": 0,
            },
        )
        db.add(call)
        db.add_all(
            [
                CallContextItem(
                    call_id=call_id, key="caller_id", value=caller_id, step="identify", verified=True
                ),
                CallContextItem(
                    call_id=call_id, key="account_number", value="ACC-1001", step="account", verified=True
                ),
                CallContextItem(
                    call_id=call_id, key="pin", value="****", step="pin", verified=True, sensitive=True
                ),
                CallContextItem(call_id=call_id, key="reason", value=reason, step="menu"),
            ]
        )
        db.add(CallSegment(call_id=call_id, agent_id=agent_id, queue_id=q.id, offered_at=now))
        agent = db.get(Agent, agent_id)
        assert agent is not None
        agent.state, agent.state_since = "ringing", now
    bus.publish(CallOffered(call_id, agent_id, why="test offer"))
