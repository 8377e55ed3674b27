"""The IVR engine's CustomerDirectory, backed by the database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from callcentre.db.models import Call, Customer, CustomerPhone
from callcentre.passwords import verify_password
from ivr.engine import CustomerRecord


def _record(customer: Customer | None) -> CustomerRecord | None:
    if customer is None:
        return None
    return CustomerRecord(id=customer.id, tier=customer.tier, language=customer.language)


class DatabaseDirectory:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._sessions = session_factory

    def find_by_phone(self, number: str) -> CustomerRecord | None:
        with self._sessions() as session:
            phone = session.scalar(select(CustomerPhone).where(CustomerPhone.number == number))
            return _record(phone.customer if phone else None)

    def find_by_account(self, account_number: str) -> CustomerRecord | None:
        with self._sessions() as session:
            return _record(session.scalar(select(Customer).where(Customer.account_number == account_number)))

    def check_pin(self, customer_id: int, pin: str) -> bool:
        with self._sessions() as session:
            customer = session.get(Customer, customer_id)
            return customer is not None and verify_password(customer.pin_hash, pin)

    def recent_call_count(self, customer_id: int, since: datetime, reason: str | None) -> int:
        query = select(func.count(Call.id)).where(Call.customer_id == customer_id, Call.arrived_at >= since)
        if reason is not None:
            query = query.where(Call.reason == reason)
        with self._sessions() as session:
            return int(session.scalar(query) or 0)
