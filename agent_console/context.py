"""What the console needs from the platform, gathered in one object stored on the Flask app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import current_app
from sqlalchemy.orm import Session, sessionmaker

from callcentre.bus import EventBus
from callcentre.settings import Settings

if TYPE_CHECKING:
    from agent_console.actions import ConsoleActions
    from agent_console.events import PushHub
    from agent_console.services.alerts import AlertMonitor

EXTENSION_KEY = "callcentre_console"


@dataclass
class Console:
    settings: Settings
    session_factory: sessionmaker[Session]
    bus: EventBus
    actions: ConsoleActions
    hub: PushHub
    alerts: AlertMonitor
    backend: Any = None
    """The telephony backend, if any; the console reaches it only through ``actions``."""
    extra: dict[str, Any] = field(default_factory=dict)


def get_console() -> Console:
    console: Console = current_app.extensions[EXTENSION_KEY]
    return console
