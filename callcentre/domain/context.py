"""CallContext: what the IVR collected, once, travelling with the call to every agent."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from callcentre.domain.errors import AlreadyCollected


@dataclass(frozen=True)
class ContextItem:
    key: str
    """What was collected: ``caller_id``, ``customer_id``, ``account_number``, ``reason`` …"""
    value: str
    step: str
    """The IVR step that collected it."""
    verified: bool = False
    """True when checked against the customer record (PIN matched, caller ID on file)."""
    sensitive: bool = False
    """PINs and card numbers: kept masked in the context, never logged or shown."""
    at: datetime | None = None


@dataclass(frozen=True)
class CallContext:
    """An immutable, ordered collection of :class:`ContextItem`; adding returns a new context."""

    call_id: str
    items: tuple[ContextItem, ...] = field(default=())

    def __contains__(self, key: object) -> bool:
        return any(item.key == key for item in self.items)

    def __iter__(self) -> Iterator[ContextItem]:
        return iter(self.items)

    def get(self, key: str, default: str | None = None) -> str | None:
        for item in self.items:
            if item.key == key:
                return item.value
        return default

    def item(self, key: str) -> ContextItem | None:
        return next((i for i in self.items if i.key == key), None)

    def with_item(self, item: ContextItem) -> CallContext:
        """Add a new fact. Asking again for something already collected is a defect: refuse it."""
        if item.key in self:
            raise AlreadyCollected(self.call_id, item.key, item.step)
        return CallContext(self.call_id, (*self.items, item))

    def replacing(self, item: ContextItem) -> CallContext:
        """Update a derived fact (e.g. ``required_skills`` after a menu), never one the caller typed."""
        kept = tuple(i for i in self.items if i.key != item.key)
        return CallContext(self.call_id, (*kept, item))

    def as_dict(self) -> dict[str, str]:
        return {i.key: i.value for i in self.items}

    @classmethod
    def from_mapping(cls, call_id: str, values: Mapping[str, str], step: str = "import") -> CallContext:
        return cls(call_id, tuple(ContextItem(k, v, step) for k, v in values.items()))
