"""In-process event bus: one table of event type → handlers, run in subscription order.

Handlers run synchronously in the publisher's thread; a handler that raises is logged with the
event type and call id (never the payload, which may hold customer data) and the others still run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

E = TypeVar("E")
Handler = Callable[[Any], None]


class EventBus:
    def __init__(self) -> None:
        self._handlers: list[tuple[type, Handler]] = []
        self._lock = threading.Lock()
        self.errors: int = 0

    def subscribe(self, event_type: type[E], handler: Callable[[E], None]) -> None:
        with self._lock:
            self._handlers.append((event_type, handler))

    def unsubscribe(self, event_type: type[E], handler: Callable[[E], None]) -> None:
        with self._lock:
            if (event_type, handler) in self._handlers:
                self._handlers.remove((event_type, handler))

    def publish(self, event: object) -> None:
        with self._lock:
            handlers = [h for t, h in self._handlers if isinstance(event, t)]
        for handler in handlers:
            try:
                handler(event)
            except Exception:
                self.errors += 1
                log.exception(
                    "handler %s failed for %s (call %s)",
                    getattr(handler, "__qualname__", handler),
                    type(event).__name__,
                    getattr(event, "call_id", "-"),
                )
