"""The console in a real browser (Debian chromium driven by Playwright) against the real app.

Agent 1 logs in, receives a call whose screen pop shows the IVR data (verified marks, masked PIN),
the customer's history and similar resolved calls; answers and transfers it to agent 2 with a
reason and note. Agent 2 sees the note and the same context. A supervisor's wallboard follows the
agents' states and the queue figures. Screenshots go to ``test-artifacts/``.

The offer itself is made by ``simulated_dispatcher_offer`` (what the dispatcher does when it
reserves an agent); everything after it is the console's own code path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ConsoleServer
from tests.e2e.console_seed import PASSWORD, simulated_dispatcher_offer

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def login(browser: Any, server: ConsoleServer, who: str) -> Any:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(server.url + "/login")
    page.fill("#login", who)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    expect(page.locator("#live-status")).to_have_text("live", timeout=10_000)
    return page


def test_offer_screen_pop_transfer_and_wallboard(
    browser: Any, console_server: ConsoleServer, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    server = console_server
    ids = server.seeded.agents
    agent1 = login(browser, server, "agent01")
    agent2 = login(browser, server, "agent02")
    boss = login(browser, server, "supervisor")
    assert agent1.url.endswith("/agent") and boss.url.endswith("/supervisor/")
    expect(agent1.locator("#state")).to_have_attribute("data-state", "available")
    expect(boss.locator('#agents tr[data-agent="agent01"]')).to_have_attribute("data-state", "available")

    simulated_dispatcher_offer(
        server.console.session_factory, server.console.bus,
        call_id="call-e2e-1", agent_id=ids["agent01"], customer_id=server.seeded.customer_id,
    )

    # Agent 1: live offer with the full screen pop.
    expect(agent1.locator("#call-panel")).to_be_visible(timeout=5_000)
    expect(agent1.locator("#call-phase")).to_have_text("ringing")
    expect(agent1.locator("#pop-customer-name")).to_have_text("Kim Minji")
    ivr = agent1.locator("#pop-ivr")
    expect(ivr.locator('tr[data-key="account_number"] td').first).to_have_text("ACC-1001")
    expect(ivr.locator('tr[data-key="account_number"] td.verified')).to_have_count(1)
    expect(ivr.locator('tr[data-key="pin"] td.masked')).to_have_text("••••")
    expect(ivr.locator('tr[data-key="reason"] td.unverified')).to_have_count(1)
    expect(agent1.locator("#pop-why")).to_contain_text("billing level 4")
    history = agent1.locator('#pop-history tr[data-call="call-history-1"]')
    expect(history).to_contain_text("Refunded the double charge")
    expect(history).to_contain_text("charged twice")
    expect(agent1.locator("#pop-similar li").first).to_contain_text("Refunded the double charge")
    agent1.fill("#similar-q", "march invoice")
    with agent1.expect_response(lambda r: "/similar?q=march%20invoice" in r.url) as searched:
        agent1.locator("#similar-form button").click()
    assert searched.value.ok and searched.value.json()["results"][0]["call_id"] == "call-history-1"
    expect(agent1.locator("#pop-similar li")).to_have_count(1)
    expect(agent1.locator("#pop-similar li").first).to_contain_text("March invoice")
    expect(boss.locator('#agents tr[data-agent="agent01"]')).to_have_attribute("data-state", "ringing")
    agent1.screenshot(path=str(artifacts / "console-agent1-offer.png"), full_page=True)

    agent1.click("#answer")
    expect(agent1.locator("#call-phase")).to_have_text("connected")
    expect(boss.locator('#agents tr[data-agent="agent01"]')).to_have_attribute("data-state", "on_call")

    # Transfer needs a reason and a note: the form refuses an empty note with the server's message.
    agent1.select_option("#transfer-target-type", "agent")
    agent1.locator("#transfer-target").focus()
    expect(agent1.locator('#transfer-target option[value="agent02"]')).to_be_enabled()
    agent1.select_option("#transfer-target", "agent02")
    agent1.fill("#transfer-reason", "needs billing specialist")
    agent1.evaluate("document.getElementById('transfer-note').removeAttribute('required')")
    agent1.click("#transfer-submit")
    expect(agent1.locator("#call-error")).to_contain_text("note")
    agent1.fill("#transfer-note", "Double charge again on the April invoice; customer already verified.")
    agent1.click("#transfer-submit")
    expect(agent1.locator("#wrap-up")).to_be_visible()
    expect(agent1.locator("#state")).to_have_attribute("data-state", "wrap_up")
    agent1.screenshot(path=str(artifacts / "console-agent1-wrap-up.png"), full_page=True)

    # Agent 2: the call arrives with the first agent's note and the IVR context, asked for nothing again.
    expect(agent2.locator("#call-panel")).to_be_visible(timeout=5_000)
    expect(agent2.locator("#pop-transfer-notes")).to_contain_text("Double charge again on the April invoice")
    expect(agent2.locator("#pop-transfer-notes")).to_contain_text("needs billing specialist")
    expect(agent2.locator('#pop-ivr tr[data-key="account_number"] td.verified')).to_have_count(1)
    expect(agent2.locator("#pop-customer-name")).to_have_text("Kim Minji")
    agent2.screenshot(path=str(artifacts / "console-agent2-transferred.png"), full_page=True)
    expect(boss.locator('#agents tr[data-agent="agent02"]')).to_have_attribute("data-state", "ringing")

    # Agent 1 wraps up and is available again; the wallboard follows.
    agent1.select_option("#disposition", "escalated")
    agent1.fill("#wrap-notes", "Passed to Agent 02.")
    agent1.click("#wrap-submit")
    expect(agent1.locator("#state")).to_have_attribute("data-state", "available")
    expect(agent1.locator("#wrap-up")).to_be_hidden()
    expect(boss.locator('#agents tr[data-agent="agent01"]')).to_have_attribute("data-state", "available")

    agent2.click("#answer")
    expect(agent2.locator("#call-phase")).to_have_text("connected")
    expect(boss.locator('#agents tr[data-agent="agent02"]')).to_have_attribute("data-state", "on_call")
    agent2.click("#hangup")
    expect(agent2.locator("#wrap-up")).to_be_visible()
    agent2.select_option("#disposition", "resolved")
    expect(agent2.locator("#resolved-yes")).to_be_checked()
    agent2.fill("#wrap-notes", "Refunded the April double charge.")
    agent2.click("#wrap-submit")
    expect(agent2.locator("#state")).to_have_attribute("data-state", "available")

    # Queue figures on the wallboard count the call once: offered 1, answered 1, transfer 100 %.
    billing = boss.locator('#queues tr[data-queue="billing"]')
    expect(billing.locator("td.offered")).to_have_text("1", timeout=10_000)
    expect(billing.locator("td.answered")).to_have_text("1")
    expect(boss.locator("#chart-volume rect.bar-offered").first).to_be_attached()
    boss.screenshot(path=str(artifacts / "console-wallboard.png"), full_page=True)

    with server.console.session_factory() as db:
        from callcentre.db.models import Call

        call = db.get(Call, "call-e2e-1")
        assert call is not None
        assert call.disposition == "resolved" and call.resolved is True
        assert re.search(r"\[agent01\] Passed to Agent 02\.\n\[agent02\] Refunded", call.wrap_up_note)
