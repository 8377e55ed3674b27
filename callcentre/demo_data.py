"""A coherent, deterministic demo: queues, skills, agents, customers with history.

Idempotent: rows are matched on natural keys (names, logins, account numbers, fixed call ids),
created when missing and otherwise left as they are, so running it twice leaves the same data.

Demo logins: ``agent01``…``agent10`` / ``demo-agent``, ``supervisor`` / ``demo-supervisor``,
``admin`` / ``demo-admin``. Demo customer *n* (1–50): account ``1000000n`` (8 digits), phone
``+1555010nnnn``, PIN = the last four digits of the account number.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

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
    Skill,
)
from callcentre.passwords import hash_password, verify_password

SKILLS = {
    "general": "General enquiries",
    "billing": "Bills, payments, refunds",
    "technical": "Internet, TV and phone faults",
    "sales": "New services and upgrades",
    "retention": "Customers who want to leave",
    "complaints": "Formal complaints",
}

QUEUES: list[dict[str, Any]] = [
    {"name": "general", "description": "Everything else", "required_skills": [{"skill": "general", "min_level": 1}],
     "priority": 0, "relaxation": [{"after_seconds": 60, "any_skill": True}]},
    {"name": "billing", "description": "Billing and payments",
     "required_skills": [{"skill": "billing", "min_level": 2}], "priority": 1,
     "relaxation": [{"after_seconds": 30, "min_level": 1}, {"after_seconds": 90, "any_skill": True}]},
    {"name": "technical", "description": "Technical support",
     "required_skills": [{"skill": "technical", "min_level": 2}], "priority": 1,
     "relaxation": [{"after_seconds": 30, "min_level": 1}, {"after_seconds": 120, "any_skill": True}]},
    {"name": "sales", "description": "New services", "required_skills": [{"skill": "sales", "min_level": 1}],
     "priority": 2, "relaxation": [{"after_seconds": 45, "any_skill": True}]},
]

DISPOSITIONS = [
    ("resolved", "Resolved", True),
    ("info_given", "Information given", True),
    ("follow_up", "Follow-up needed", False),
    ("escalated", "Escalated", False),
    ("wrong_queue", "Wrong department", False),
    ("no_solution", "No solution found", False),
]

# (login, name, languages, {skill: proficiency})
AGENTS: list[tuple[str, str, str, dict[str, int]]] = [
    ("agent01", "Ada Park", "en", {"general": 4, "billing": 5, "retention": 3}),
    ("agent02", "Ben Okafor", "en", {"general": 3, "billing": 4, "complaints": 4}),
    ("agent03", "Chloe Kim", "en,ko", {"general": 4, "technical": 5}),
    ("agent04", "Dev Shah", "en", {"general": 2, "technical": 4, "sales": 2}),
    ("agent05", "Eva Lindqvist", "en", {"general": 3, "sales": 5, "retention": 4}),
    ("agent06", "Femi Adeyemi", "en", {"general": 5, "billing": 2, "technical": 2}),
    ("agent07", "Grace Liu", "en,ko", {"general": 3, "billing": 3, "sales": 3}),
    ("agent08", "Hugo Martin", "en", {"general": 2, "technical": 3, "complaints": 5}),
    ("agent09", "Ines Duarte", "en", {"general": 4, "retention": 5, "billing": 2}),
    ("agent10", "Jae-won Lee", "ko,en", {"general": 3, "technical": 3, "sales": 2}),
]
STAFF = [("supervisor", "Sam Supervisor", "supervisor", "demo-supervisor"),
         ("admin", "Alex Admin", "admin", "demo-admin")]
AGENT_PASSWORD = "demo-agent"

FIRST = ["Mina", "Oliver", "Priya", "Quentin", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wen"]
LAST = ["Anders", "Bauer", "Cho", "Diaz", "Evans"]
REASONS = ["billing", "technical", "sales"]


@dataclass(frozen=True)
class DemoSummary:
    skills: int
    queues: int
    agents: int
    customers: int
    calls: int


def demo_customer(n: int) -> dict[str, Any]:
    account = f"{10000000 + n}"
    return {
        "name": f"{FIRST[(n - 1) % 10]} {LAST[(n - 1) // 10 % 5]}",
        "account_number": account,
        "pin": account[-4:],
        "phone": f"+1555010{n:04d}",
        "tier": "platinum" if n % 13 == 0 else "gold" if n % 7 == 0 else "standard",
        "language": "ko" if n % 9 == 0 else "en",
    }


def load_demo_data(session: Session, now: datetime | None = None) -> DemoSummary:
    now = now or datetime.now(UTC)
    skills = _skills(session)
    _queues(session)
    _dispositions(session)
    agents = _agents(session, skills)
    customers = _customers(session)
    calls = _history(session, customers, agents, now)
    session.flush()
    return DemoSummary(len(skills), len(QUEUES), len(agents), len(customers), calls)


def _skills(session: Session) -> dict[str, Skill]:
    found = {s.name: s for s in session.scalars(select(Skill))}
    for name, description in SKILLS.items():
        if name not in found:
            found[name] = Skill(name=name, description=description)
            session.add(found[name])
    session.flush()
    return found


def _queues(session: Session) -> None:
    existing = set(session.scalars(select(Queue.name)))
    for spec in QUEUES:
        if spec["name"] not in existing:
            session.add(Queue(**spec))


def _dispositions(session: Session) -> None:
    existing = set(session.scalars(select(Disposition.code)))
    for code, label, resolved in DISPOSITIONS:
        if code not in existing:
            session.add(Disposition(code=code, label=label, resolved=resolved))


def _ensure_agent(session: Session, login: str, name: str, role: str, password: str, languages: str) -> Agent:
    agent = session.scalar(select(Agent).where(Agent.login == login))
    if agent is None:
        agent = Agent(login=login, name=name, role=role, password_hash=hash_password(password),
                      languages=languages, state="logged_out", state_since=datetime(2026, 1, 1, tzinfo=UTC))
        session.add(agent)
        session.flush()
    elif not verify_password(agent.password_hash, password):
        agent.password_hash = hash_password(password)
    return agent


def _agents(session: Session, skills: dict[str, Skill]) -> dict[str, Agent]:
    agents: dict[str, Agent] = {}
    for login, name, languages, proficiency in AGENTS:
        agent = _ensure_agent(session, login, name, "agent", AGENT_PASSWORD, languages)
        have = {link.skill_id for link in agent.skills}
        for skill_name, level in proficiency.items():
            if skills[skill_name].id not in have:
                agent.skills.append(AgentSkill(skill_id=skills[skill_name].id, proficiency=level))
        agents[login] = agent
    for login, name, role, password in STAFF:
        agents[login] = _ensure_agent(session, login, name, role, password, "en")
    session.flush()
    return agents


def _customers(session: Session) -> dict[int, Customer]:
    customers: dict[int, Customer] = {}
    for n in range(1, 51):
        spec = demo_customer(n)
        customer = session.scalar(select(Customer).where(Customer.account_number == spec["account_number"]))
        if customer is None:
            customer = Customer(name=spec["name"], account_number=spec["account_number"],
                                pin_hash=hash_password(spec["pin"]), tier=spec["tier"], language=spec["language"],
                                notes="")
            customer.phones.append(CustomerPhone(number=spec["phone"], label="mobile"))
            session.add(customer)
        customers[n] = customer
    session.flush()
    return customers


def _history(session: Session, customers: dict[int, Customer], agents: dict[str, Agent], now: datetime) -> int:
    """Earlier calls for every third customer, so screen pops and "similar resolved calls" have content."""
    created = 0
    notes = {
        "billing": "Explained the pro-rata charge after the plan change; refund of the overlap issued.",
        "technical": "Router firmware out of date; walked the customer through the update, line stable.",
        "sales": "Customer wanted faster broadband; upgraded to Fibre 500 from next billing cycle.",
    }
    agent_for = {"billing": "agent01", "technical": "agent03", "sales": "agent05"}
    for n in range(3, 51, 3):
        call_id = f"call-demo-{n:04d}"
        if session.get(Call, call_id) is not None:
            continue
        spec = demo_customer(n)
        reason = REASONS[n % 3]
        started = (now - timedelta(days=n % 20 + 1)).replace(microsecond=0)
        agent = agents[agent_for[reason]]
        call = Call(id=call_id, backend="memory", backend_ref=call_id, caller_id=spec["phone"],
                    dialled_number="1000", state="ended", customer_id=customers[n].id, reason=reason,
                    required_skills=[[reason, 2]], arrived_at=started, queued_at=started + timedelta(seconds=40),
                    answered_at=started + timedelta(seconds=55), ended_at=started + timedelta(seconds=400),
                    outcome="resolved", disposition="resolved", resolved=True, wrap_up_note=notes[reason])
        call.context_items.extend([
            CallContextItem(key="caller_id", value=spec["phone"], step="arrival", collected_at=started),
            CallContextItem(key="customer_id", value=str(customers[n].id), step="identify", verified=True,
                            collected_at=started),
            CallContextItem(key="reason", value=reason, step="main_menu", collected_at=started),
        ])
        call.segments.append(CallSegment(agent_id=agent.id, offered_at=started + timedelta(seconds=50),
                                         started_at=started + timedelta(seconds=55),
                                         ended_at=started + timedelta(seconds=400), end_reason="completed"))
        session.add(call)
        created += 1
    return created
