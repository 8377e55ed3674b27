"""Conditions a ``branch`` step can test: business hours, customer tier, earlier calls, context."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def in_business_hours(now: datetime, hours: Mapping[str, Any]) -> bool:
    """True when ``now`` falls inside the flow's opening hours (always open if none are declared)."""
    if not hours:
        return True
    local = now + timedelta(minutes=int(hours.get("utc_offset_minutes", 0)))
    days = hours.get("days", list(DAYS[:5]))
    if DAYS[local.weekday()] not in days:
        return False
    opening = str(hours.get("open", "00:00"))
    closing = str(hours.get("close", "24:00"))
    clock = local.strftime("%H:%M")
    return opening <= clock < closing
