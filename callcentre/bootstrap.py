"""The one place where backends, the IVR and handlers are wired together.

``build_platform`` returns a :class:`Platform` holding the bus, the database sessions, the chosen
telephony backend and the services subscribed to the bus. Nothing here runs at import time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from callcentre.bus import EventBus
from callcentre.db.migrate import upgrade
from callcentre.db.session import make_engine, make_session_factory
from callcentre.directory import DatabaseDirectory
from callcentre.ivr_service import IvrService
from callcentre.settings import Settings
from ivr.engine import IvrEngine
from ivr.flow import Flow, default_flow_path, load_flow
from telephony.base import TelephonyBackend, make_backend_name_error


def prompts_dir(settings: Settings) -> Path:
    return Path(settings.ivr.prompts_dir) if settings.ivr.prompts_dir else Path(__file__).parents[1] / "ivr" / "prompts"


def flow_path(settings: Settings) -> Path:
    return Path(settings.ivr.flow) if settings.ivr.flow else default_flow_path()


def _memory(settings: Settings) -> TelephonyBackend:
    from telephony.memory import MemoryBackend

    return MemoryBackend()


def _lazy(module: str, factory: str) -> Callable[[Settings], TelephonyBackend]:
    """Backends with heavy third-party imports load only when chosen."""

    def build(settings: Settings) -> TelephonyBackend:
        made: TelephonyBackend = getattr(importlib.import_module(module), factory)(settings)
        return made

    return build


BACKENDS: dict[str, Callable[[Settings], TelephonyBackend]] = {
    "memory": _memory,
    # The SIP backend with browser (WebRTC) agents when [webrtc] enabled; the plain SIP backend otherwise.
    "sip": _lazy("telephony.webrtc.backend", "build_sip_backend_for_browsers"),
    "asterisk": _lazy("telephony.asterisk", "build_asterisk_backend"),
    "twilio": _lazy("telephony.twilio", "build_twilio_backend"),
}


def make_backend(name: str, settings: Settings) -> TelephonyBackend:
    if name not in BACKENDS:
        raise make_backend_name_error(name, list(BACKENDS))
    return BACKENDS[name](settings)


@dataclass
class Platform:
    settings: Settings
    bus: EventBus
    engine: Engine
    session_factory: sessionmaker[Session]
    backend: TelephonyBackend
    flow: Flow
    ivr: IvrService
    services: dict[str, Any] = field(default_factory=dict)
    """Further services wired by ``build_platform`` (router dispatcher, recorder, survey …)."""

    def start(self) -> None:
        self.backend.start(self.bus)
        dispatcher = self.services.get("dispatcher")
        if dispatcher is not None:
            dispatcher.start()  # reservation timeouts and queue announcements tick from here

    def stop(self) -> None:
        self.backend.stop()
        for service in self.services.values():
            stop = getattr(service, "stop", None)
            if callable(stop):
                stop()
        self.engine.dispose()


def build_platform(settings: Settings, backend: TelephonyBackend | str = "memory", *,
                   migrate: bool = True) -> Platform:
    engine = make_engine(settings.database.url, echo=settings.database.echo)
    if migrate:
        upgrade(engine)
    sessions = make_session_factory(engine)
    bus = EventBus()
    chosen = make_backend(backend, settings) if isinstance(backend, str) else backend
    flow = load_flow(flow_path(settings))
    ivr = IvrService(bus, chosen, IvrEngine(flow, DatabaseDirectory(sessions)), sessions)
    platform = Platform(settings, bus, engine, sessions, chosen, flow, ivr)
    _wire_services(platform)
    return platform


def _wire_services(platform: Platform) -> None:
    """Event → handler table beyond the IVR; see docs/architecture.md for the whole pipeline."""
    from routing.dispatcher import Dispatcher, DispatcherConfig

    platform.services["dispatcher"] = Dispatcher(
        platform.bus, platform.backend, platform.session_factory,
        config=DispatcherConfig.from_settings(platform.settings.routing),
    ).subscribe()
    from recordings.wiring import install as install_recordings  # recording, speech menus, survey

    platform.services.update(install_recordings(platform))

