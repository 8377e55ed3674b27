"""Shared pieces of the SIP endpoint integration tests: a real platform on a free loopback port.

The platform is the one ``callcentre serve`` builds (``callcentre.bootstrap.build_platform``) with a
:class:`telephony.sip.SipBackend` on port 0 (the OS picks a free port) and RTP ports chosen by the
OS, on the test's temporary SQLite database.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from callcentre.domain.events import Event
from callcentre.settings import Settings

CALLER_KNOWN = "5551234"
CALLER_UNKNOWN = "5559999"
ACCOUNT = "123456"
PIN = "4321"


@dataclass
class EventLog:
    events: list[Event] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def wait_for(self, kind: type, timeout: float = 10.0, where: Callable[[Any], bool] = lambda e: True) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self.events if isinstance(e, kind) and where(e)]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    names = [type(e).__name__ for e in self.events]
                    raise AssertionError(f"no {kind.__name__} within {timeout}s; saw {names}")
                self._cond.wait(left)


def seed_customers(settings: Settings) -> int:
    """One customer known by caller ID and account + PIN; returns the customer id."""
    from callcentre.db.migrate import upgrade
    from callcentre.db.models import Customer, CustomerPhone
    from callcentre.db.session import make_engine, make_session_factory
    from callcentre.passwords import hash_password

    engine = make_engine(settings.database.url)
    upgrade(engine)
    with make_session_factory(engine)() as session:
        customer = Customer(name="Test Customer", account_number=ACCOUNT, pin_hash=hash_password(PIN))
        customer.phones.append(CustomerPhone(number=CALLER_KNOWN))
        session.add(customer)
        session.commit()
        cid = customer.id
    engine.dispose()
    return cid


@pytest.fixture(name="sip_settings")
def sip_settings_fixture(settings: Settings) -> Settings:
    return settings.replace("sip", host="127.0.0.1", port=0, rtp_port_low=0, rtp_port_high=0, numbers="1000")


@dataclass
class RunningPlatform:
    platform: Any
    backend: Any
    log: EventLog
    settings: Settings

    @property
    def target(self) -> str:
        host, port = self.backend.address
        return f"{host}:{port}"


def start_platform(settings: Settings, **backend_options: Any) -> RunningPlatform:
    from callcentre.bootstrap import build_platform, prompts_dir
    from telephony.sip import SipBackend

    backend = SipBackend(settings.sip, prompts_dir(settings), **backend_options)
    platform = build_platform(settings, backend)
    log = EventLog()
    platform.bus.subscribe(Event, log)
    platform.start()
    return RunningPlatform(platform, backend, log, settings)


@pytest.fixture(name="sip_platform")
def sip_platform_fixture(sip_settings: Settings) -> Iterator[RunningPlatform]:
    seed_customers(sip_settings)
    running = start_platform(sip_settings)
    try:
        yield running
    finally:
        running.platform.stop()


def calls_show(settings: Settings, call_id: str) -> dict[str, Any]:
    """``callcentre calls show ID --json`` on the test's database, through click's runner."""
    from callcentre.cli import main

    result = CliRunner().invoke(main, ["--database", settings.database.url, "calls", "show", call_id, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def workdir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir(exist_ok=True)
    return path
