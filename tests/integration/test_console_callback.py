"""Callbacks in the console, through its JSON API and live push on the whole platform
(``build_platform`` with the in-process SIMULATION backend, whose ``call_back`` is driven by the test:
``customer_answers`` / ``customer_unavailable``; the real IVR flow, dispatcher and demo database).

The agent's screen pop says the call is a callback, which attempt and its state — ringing you,
dialling the customer, customer connected, customer did not answer (retry at HH:MM), given up — and
the same state is pushed on the agent's live channel; the wallboard counts callbacks waiting, due for
a retry and given up today, and raises an alert for a given-up one. CSRF and roles stay as they are.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from callcentre.db.base import utcnow
from callcentre.db.models import Agent, Call, QueueEntry
from callcentre.settings import Settings
from ivr.actions import Gather, RequestCallback
from tests.integration.test_console_platform import login, post


def _platform(settings: Settings) -> Any:
    from callcentre.bootstrap import build_platform
    from callcentre.db.session import session_scope
    from callcentre.demo_data import load_demo_data

    p = build_platform(settings, backend="memory")
    with session_scope(p.session_factory) as db:
        load_demo_data(db)
    p.start()
    return p


@pytest.fixture
def platform(settings: Settings) -> Iterator[Any]:
    p = _platform(settings)
    yield p
    p.stop()


@pytest.fixture
def app(platform: Any, settings: Settings) -> Flask:
    from agent_console.app import create_app

    return create_app(settings, platform=platform)


def caller_asks_for_callback(platform: Any, customer: dict[str, Any]) -> str:
    """The caller goes through the IVR and chooses 9, "call me back", and hangs up after the goodbye."""
    backend = platform.backend
    call_id: str = backend.place_call(customer["phone"])
    for _ in range(8):
        action = backend.last_action(call_id)
        if isinstance(action, RequestCallback):
            backend.caller_hangs_up(call_id)
            return call_id
        assert isinstance(action, Gather), action
        backend.press(call_id, customer["pin"] if "enter_pin" in {p.id for p in action.prompts} else "9")
    raise AssertionError(f"caller never reached the callback: {backend.heard_ids(call_id)}")


def pushed(sub: Any, kind: str, call_id: str) -> dict[str, Any]:
    """The next live message of ``kind`` for the call (others are skipped)."""
    while True:
        try:
            message = sub.messages.get(timeout=3)
        except queue.Empty:
            raise AssertionError(f"no {kind!r} push for {call_id}") from None
        if message["type"] == kind and message["data"].get("call_id") == call_id:
            data: dict[str, Any] = message["data"]
            return data


def supervisor_events(sub: Any, call_id: str) -> set[str]:
    """Every ``calls`` event pushed to supervisors so far for the call."""
    seen = set()
    while not sub.messages.empty():
        message = sub.messages.get_nowait()
        if message["type"] == "calls" and message["data"].get("call_id") == call_id:
            seen.add(message["data"]["event"])
    return seen


def make_due(platform: Any, call_id: str) -> None:
    """Skip the 5-minute retry wait (the wait itself is tested with a moved clock elsewhere)."""
    with platform.session_factory() as db:
        db.execute(
            update(QueueEntry)
            .where(QueueEntry.call_id == call_id)
            .values(callback_retry_at=utcnow() - timedelta(seconds=1))
        )
        db.commit()
    platform.services["dispatcher"].dispatch()


def test_callback_states_reach_the_agent_console_and_the_wallboard(app: Flask, platform: Any) -> None:
    from agent_console.context import EXTENSION_KEY
    from callcentre.demo_data import AGENT_PASSWORD, demo_customer

    console = app.extensions[EXTENSION_KEY]
    femi, token = login(app, "agent06", AGENT_PASSWORD)  # general 5
    boss, boss_token = login(app, "supervisor", "demo-supervisor")
    with platform.session_factory() as db:
        me = db.scalars(select(Agent).where(Agent.login == "agent06")).one().id
    push = console.hub.subscribe(me, supervisor=False)
    wall = console.hub.subscribe(-1, supervisor=True)

    customer = demo_customer(2)
    call_id = caller_asks_for_callback(platform, customer)
    board = boss.get("/api/wallboard").get_json()
    general = next(q for q in board["queues"] if q["name"] == "general")
    assert general["callbacks"]["waiting"] == 1
    assert board["capabilities"]["callback"]["enabled"] is True

    post(femi, token, "/api/agent/state", {"state": "available"})
    assert pushed(push, "offer", call_id)
    pop = femi.get("/api/agent/current").get_json()["screen_pop"]
    assert pop["callback"]["is_callback"] and pop["callback"]["state"] == "ringing"
    assert (pop["callback"]["attempt"], pop["callback"]["max_attempts"]) == (1, 3)
    assert customer["phone"] not in pop["callback"]["label"]

    # The agent answers: the customer is being dialled. Their hang-up button ends the attempt (CSRF and
    # roles as for any hang-up): not counted against the customer, retried at its place after the wait.
    post(femi, token, f"/api/calls/{call_id}/answer")
    dialling = pushed(push, "callback", call_id)
    assert (dialling["state"], dialling["attempt"], dialling["label"]) == ("dialling", 1, "dialling the customer")
    assert femi.post(f"/api/calls/{call_id}/hangup").status_code in (400, 403)  # no CSRF token
    assert boss.post(f"/api/calls/{call_id}/hangup", headers={"X-CSRFToken": boss_token}).status_code in (403, 404)
    assert femi.get("/api/agent/current").get_json()["screen_pop"]["callback"]["state"] == "dialling"
    r = femi.post(f"/api/calls/{call_id}/hangup", headers={"X-CSRFToken": token})
    assert r.status_code < 300, r.get_data(as_text=True)
    ended = pushed(push, "callback", call_id)
    assert (ended["state"], ended["reason"], ended["attempt"]) == ("retry", "agent-ended", 0)
    assert ended["label"].startswith("you ended the attempt — retry at ") and ended["retry_at"]
    current = femi.get("/api/agent/current").get_json()
    assert current["state"] == "wrap_up"
    assert current["screen_pop"]["callback"]["label"].startswith("you ended the attempt — retry at ")
    with platform.session_factory() as db:
        entry = db.scalars(select(QueueEntry).where(QueueEntry.call_id == call_id)).one()
        assert (entry.status, entry.callback_attempts, entry.callback_result) == ("waiting", 0, "agent-ended")
    post(femi, token, f"/api/calls/{call_id}/wrap-up", {"disposition": "follow_up", "resolved": False})

    # Retry due: still the customer's FIRST attempt.
    make_due(platform, call_id)
    assert pushed(push, "offer", call_id)
    post(femi, token, f"/api/calls/{call_id}/answer")
    dialling = pushed(push, "callback", call_id)
    assert (dialling["state"], dialling["attempt"]) == ("dialling", 1)

    # Busy: the agent is told, with the retry time, and goes to wrap-up; the wallboard shows the retry.
    platform.backend.customer_unavailable(call_id, "busy")
    retry = pushed(push, "callback", call_id)
    assert retry["state"] == "retry" and retry["reason"] == "busy" and retry["retry_at"]
    assert "did not answer (busy) — retry at " in retry["label"]
    assert {"callback_dialling", "callback_retry"} <= supervisor_events(wall, call_id)
    current = femi.get("/api/agent/current").get_json()
    assert current["state"] == "wrap_up" and current["screen_pop"]["callback"]["state"] == "retry"
    general = next(q for q in boss.get("/api/wallboard").get_json()["queues"] if q["name"] == "general")
    assert general["callbacks"]["retry_pending"] == 1
    post(femi, token, f"/api/calls/{call_id}/wrap-up", {"disposition": "follow_up", "resolved": False})

    # Retry due: attempt 2; the customer answers and the console says so.
    make_due(platform, call_id)
    assert pushed(push, "offer", call_id)
    post(femi, token, f"/api/calls/{call_id}/answer")
    platform.backend.customer_answers(call_id)
    states = [pushed(push, "callback", call_id)["state"] for _ in range(2)]
    assert states == ["dialling", "connected"]
    pop = femi.get("/api/agent/current").get_json()["screen_pop"]
    assert pop["callback"]["state"] == "connected" and pop["callback"]["attempt"] == 2
    assert pop["customer"]["name"] == customer["name"]
    post(femi, token, f"/api/calls/{call_id}/hangup")
    post(femi, token, f"/api/calls/{call_id}/wrap-up", {"disposition": "resolved", "resolved": True})
    with platform.session_factory() as db:
        call = db.get(Call, call_id)
        assert call is not None and call.outcome == "callback" and call.resolved is True

    # Roles and CSRF unchanged: a supervisor cannot answer for an agent, a POST without token is refused.
    r = boss.post(f"/api/calls/{call_id}/answer", headers={"X-CSRFToken": boss_token})
    assert r.status_code == 403
    assert femi.post("/api/agent/state", json={"state": "available"}).status_code == 400


def test_given_up_callback_is_an_alert_on_the_wallboard(settings: Settings) -> None:
    from agent_console.app import create_app
    from callcentre.demo_data import AGENT_PASSWORD, demo_customer

    one_try = settings.replace("routing", callback_max_attempts=1)
    platform = _platform(one_try)
    try:
        app = create_app(one_try, platform=platform)
        femi, token = login(app, "agent06", AGENT_PASSWORD)
        boss, _ = login(app, "supervisor", "demo-supervisor")
        customer = demo_customer(4)
        call_id = caller_asks_for_callback(platform, customer)
        post(femi, token, "/api/agent/state", {"state": "available"})
        post(femi, token, f"/api/calls/{call_id}/answer")
        platform.backend.customer_unavailable(call_id, "no-answer")
        pop = femi.get("/api/agent/current").get_json()["screen_pop"]
        assert pop["callback"]["state"] == "given-up" and pop["callback"]["max_attempts"] == 1
        board = boss.get("/api/wallboard").get_json()
        general = next(q for q in board["queues"] if q["name"] == "general")
        assert general["callbacks"]["given_up"] == 1
        kinds = {a["kind"]: a["message"] for a in board["alerts"]}
        assert "given up today" in kinds["callback_given_up"]
        assert customer["phone"] not in str(board)
    finally:
        platform.stop()
