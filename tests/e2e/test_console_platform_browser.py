"""The console in chromium on the whole platform: in-memory backend, the real IVR service and flow,
the real dispatcher and demo data. A caller goes through the IVR and waits (the wallboard shows
it); agent 1 presses Available, the dispatcher offers the call, the browser shows the IVR data and
the customer's history; agent 1 answers and transfers to agent 2 with a note; agent 2 sees the
note and the same context, answers, hangs up and wraps up. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callcentre.settings import Settings
from ivr.actions import Enqueue, Gather

pytestmark = [pytest.mark.peer, pytest.mark.slow]


@pytest.fixture
def live_platform(settings: Settings) -> Iterator[tuple[Any, str]]:
    from agent_console.app import create_app
    from agent_console.serving import serve_in_thread
    from callcentre.bootstrap import build_platform
    from callcentre.db.session import session_scope
    from callcentre.demo_data import load_demo_data
    from routing.dispatcher import Dispatcher

    platform = build_platform(settings, backend="memory")
    with session_scope(platform.session_factory) as db:
        load_demo_data(db)
    if "dispatcher" not in platform.services:
        dispatcher = Dispatcher(platform.bus, platform.backend, platform.session_factory)
        platform.services["dispatcher"] = dispatcher.subscribe()
    platform.start()
    running = serve_in_thread(create_app(settings, platform=platform))
    try:
        yield platform, running.url
    finally:
        running.stop()
        platform.stop()


def login(browser: Any, url: str, who: str, password: str) -> Any:
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(url + "/login")
    page.fill("#login", who)
    page.fill("#password", password)
    page.click("#login-submit")
    expect(page.locator("#live-status")).to_have_text("live", timeout=10_000)
    return page


def caller_waits_in_queue(platform: Any, phone: str, pin: str, choice: str) -> str:
    backend = platform.backend
    call_id: str = backend.place_call(phone)
    for _ in range(8):
        action = backend.last_action(call_id)
        if isinstance(action, Enqueue):
            return call_id
        assert isinstance(action, Gather), action
        backend.press(call_id, pin if "enter_pin" in {p.id for p in action.prompts} else choice)
    raise AssertionError("caller never reached a queue")


def test_ivr_caller_reaches_agent_in_browser_and_is_transferred_with_a_note(
    browser: Any, live_platform: tuple[Any, str], artifacts: Path
) -> None:
    from playwright.sync_api import expect

    from callcentre.demo_data import AGENT_PASSWORD, demo_customer

    platform, url = live_platform
    ada = login(browser, url, "agent01", AGENT_PASSWORD)
    ben = login(browser, url, "agent02", AGENT_PASSWORD)
    boss = login(browser, url, "supervisor", "demo-supervisor")
    customer = demo_customer(3)  # has an earlier resolved billing call in the demo data

    call_id = caller_waits_in_queue(platform, customer["phone"], customer["pin"], "1")
    billing = boss.locator('#queues tr[data-queue="billing"]')
    expect(billing.locator("td.waiting")).to_have_text("1", timeout=10_000)

    ada.click("#go-available")
    expect(ada.locator("#call-panel")).to_be_visible(timeout=10_000)
    expect(ada.locator("#call-id")).to_have_text(call_id)
    expect(ada.locator("#pop-customer-name")).to_have_text(customer["name"])
    expect(ada.locator('#pop-ivr tr[data-key="reason"]')).to_contain_text("billing")
    expect(ada.locator("#pop-ivr td.verified").first).to_be_visible()
    expect(ada.locator("#pop-history")).to_contain_text("pro-rata charge")
    expect(ada.locator("#pop-similar li").first).to_contain_text("pro-rata charge")
    expect(ada.locator("#pop-why")).not_to_contain_text("no routing explanation")
    expect(boss.locator('#agents tr[data-agent="agent01"]')).to_have_attribute("data-state", "ringing")
    ada.screenshot(path=str(artifacts / "platform-agent1-offer.png"), full_page=True)

    ada.click("#answer")
    expect(ada.locator("#call-phase")).to_have_text("connected")
    assert platform.backend.calls[call_id].connected_agent is not None
    expect(boss.locator('#agents tr[data-agent="agent01"]')).to_have_attribute("data-state", "on_call")
    expect(billing.locator("td.waiting")).to_have_text("0")  # a ringing caller still counts as waiting

    ben.click("#go-available")
    expect(boss.locator('#agents tr[data-agent="agent02"]')).to_have_attribute("data-state", "available")
    ada.locator("#transfer-target").focus()
    expect(ada.locator('#transfer-target option[value="agent02"]')).to_be_enabled()
    ada.select_option("#transfer-target", "agent02")
    ada.fill("#transfer-reason", "second opinion")
    ada.fill("#transfer-note", "Questions the pro-rata refund amount; PIN verified by the IVR.")
    ada.click("#transfer-submit")
    expect(ada.locator("#wrap-up")).to_be_visible()

    expect(ben.locator("#call-panel")).to_be_visible(timeout=10_000)
    expect(ben.locator("#pop-transfer-notes")).to_contain_text("Questions the pro-rata refund amount")
    expect(ben.locator("#pop-transfer-notes")).to_contain_text("second opinion")
    expect(ben.locator("#pop-customer-name")).to_have_text(customer["name"])
    ben.screenshot(path=str(artifacts / "platform-agent2-transfer.png"), full_page=True)
    ben.click("#answer")
    expect(ben.locator("#call-phase")).to_have_text("connected")
    ben.click("#hangup")
    expect(ben.locator("#wrap-up")).to_be_visible()
    ben.select_option("#disposition", "resolved")
    ben.fill("#wrap-notes", "Recalculated the refund; customer agreed.")
    ben.click("#wrap-submit")
    expect(ben.locator("#state")).to_have_attribute("data-state", "available")

    ada.select_option("#disposition", "escalated")
    ada.click("#wrap-submit")
    expect(ada.locator("#state")).to_have_attribute("data-state", "available")
    expect(boss.locator('#agents tr[data-agent="agent01"]')).to_have_attribute("data-state", "available")
    expect(billing.locator("td.answered")).to_have_text("1", timeout=10_000)
    boss.screenshot(path=str(artifacts / "platform-wallboard.png"), full_page=True)
