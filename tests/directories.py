"""A real in-memory CustomerDirectory for engine tests (the engine's port, not a mock of it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ivr.engine import CustomerRecord


@dataclass
class InMemoryDirectory:
    phones: dict[str, int] = field(default_factory=dict)
    accounts: dict[str, int] = field(default_factory=dict)
    pins: dict[int, str] = field(default_factory=dict)
    tiers: dict[int, str] = field(default_factory=dict)
    calls: list[tuple[int, datetime, str]] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)

    def _record(self, customer_id: int | None) -> CustomerRecord | None:
        if customer_id is None:
            return None
        return CustomerRecord(customer_id, self.tiers.get(customer_id, "standard"), "en")

    def find_by_phone(self, number: str) -> CustomerRecord | None:
        self.lookups.append("phone")
        return self._record(self.phones.get(number))

    def find_by_account(self, account_number: str) -> CustomerRecord | None:
        self.lookups.append("account")
        return self._record(self.accounts.get(account_number))

    def check_pin(self, customer_id: int, pin: str) -> bool:
        self.lookups.append("pin")
        return self.pins.get(customer_id) == pin

    def recent_call_count(self, customer_id: int, since: datetime, reason: str | None) -> int:
        return sum(1 for c, at, r in self.calls if c == customer_id and at >= since and (reason is None or r == reason))
