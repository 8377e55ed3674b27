"""A callback in chromium on the whole platform (in-memory SIMULATION backend whose ``call_back`` the
test drives with ``customer_unavailable``; real IVR flow, dispatcher, demo data): the wallboard counts
the callback waiting; the agent's call panel says "Callback · attempt 1 of 3", then "dialling the
customer" after Answer, then "customer did not answer (busy) — retry at HH:MM" with the wrap-up form;
the wallboard counts it as waiting for a retry. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ivr.actions import Gather, RequestCallback
from tests.e2e.test_console_platform_browser import live_platform, login

__all__ = ["live_platform"]  # the fixture, imported for pytest

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def caller_asks_for_callback(platform: Any, phone: str, pin: str) -> str:
    backend = platform.backend
    call_id: str = backend.place_call(phone)
    for _ in range(8):
        action = backend.last_action(call_id)
        if isinstance(action, RequestCallback):
            backend.caller_hangs_up(call_id)
            return call_id
        assert isinstance(action, Gather), action
        backend.press(call_id, pin if "enter_pin" in {p.id for p in action.prompts} else "9")
    raise AssertionError("caller never reached the callback")


def test_callback_status_in_the_agent_console_and_on_the_wallboard(
    browser: Any, live_platform: tuple[Any, str], artifacts: Path
) -> None:
    from playwright.sync_api import expect

    from callcentre.demo_data import AGENT_PASSWORD, demo_customer

    platform, url = live_platform
    femi = login(browser, url, "agent06", AGENT_PASSWORD)  # general 5
    boss = login(browser, url, "supervisor", "demo-supervisor")
    customer = demo_customer(2)

    call_id = caller_asks_for_callback(platform, customer["phone"], customer["pin"])
    general = boss.locator('#queues tr[data-queue="general"] td.callbacks')
    expect(general).to_have_attribute("data-waiting", "1", timeout=10_000)

    femi.click("#go-available")
    expect(femi.locator("#call-panel")).to_be_visible(timeout=10_000)
    expect(femi.locator("#call-id")).to_have_text(call_id)
    status = femi.locator("#callback-status")
    expect(status).to_contain_text("Callback · attempt 1 of 3")
    expect(status).to_contain_text("ringing you")
    expect(status).to_be_visible()

    femi.click("#answer")
    expect(status).to_have_attribute("data-state", "dialling", timeout=10_000)
    expect(femi.locator("#call-phase")).to_have_text("dialling the customer")

    platform.backend.customer_unavailable(call_id, "busy")
    expect(status).to_have_attribute("data-state", "retry", timeout=10_000)
    expect(status).to_contain_text("customer did not answer (busy) — retry at ")
    expect(femi.locator("#wrap-up")).to_be_visible()
    expect(status).to_be_visible()  # above the wrap-up form, not inside the hidden call panel
    expect(general).to_have_attribute("data-retry", "1", timeout=10_000)
    assert customer["phone"] not in status.inner_text()
    femi.screenshot(path=str(artifacts / "callback-agent-retry.png"), full_page=True)
    boss.screenshot(path=str(artifacts / "callback-wallboard.png"), full_page=True)


def test_agent_ends_the_attempt_while_the_customer_rings(
    browser: Any, live_platform: tuple[Any, str], artifacts: Path
) -> None:
    """Hang up while "dialling the customer": the attempt ends (``agent-ended``), the agent is in wrap-up
    and the panel says "you ended the attempt — retry at HH:MM"; the attempt is not counted."""
    from playwright.sync_api import expect
    from sqlalchemy import select

    from callcentre.db.models import QueueEntry
    from callcentre.demo_data import AGENT_PASSWORD, demo_customer

    platform, url = live_platform
    femi = login(browser, url, "agent06", AGENT_PASSWORD)
    customer = demo_customer(2)
    call_id = caller_asks_for_callback(platform, customer["phone"], customer["pin"])
    femi.click("#go-available")
    expect(femi.locator("#call-panel")).to_be_visible(timeout=10_000)
    status = femi.locator("#callback-status")
    femi.click("#answer")
    expect(status).to_have_attribute("data-state", "dialling", timeout=10_000)
    expect(femi.locator("#hangup")).to_be_enabled()

    femi.click("#hangup")
    expect(status).to_have_attribute("data-state", "retry", timeout=10_000)
    expect(status).to_contain_text("you ended the attempt — retry at ")
    expect(femi.locator("#wrap-up")).to_be_visible()
    with platform.session_factory() as db:
        entry = db.scalars(select(QueueEntry).where(QueueEntry.call_id == call_id)).one()
        assert (entry.status, entry.callback_attempts, entry.callback_result) == ("waiting", 0, "agent-ended")
    femi.screenshot(path=str(artifacts / "callback-agent-ended.png"), full_page=True)
