"""The console on the whole platform: ``build_platform`` with the in-memory backend, the real IVR
service and flow, the real dispatcher (router → reservation → ring), the demo data, and the
console's JSON API through Flask's test client. A caller goes through the IVR, is offered to an
agent, whose console gets the push and the screen pop; the agent answers, transfers with a note,
the second agent sees it, hangs up and wraps up; the wallboard counts it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from callcentre.db.models import Agent, Call, TransferRecord
from callcentre.settings import Settings
from ivr.actions import Enqueue, Gather


@pytest.fixture
def platform(settings: Settings) -> Iterator[Any]:
    from callcentre.bootstrap import build_platform
    from callcentre.db.session import session_scope
    from callcentre.demo_data import load_demo_data
    from routing.dispatcher import Dispatcher

    p = build_platform(settings, backend="memory")
    with session_scope(p.session_factory) as db:
        load_demo_data(db)
    if "dispatcher" not in p.services:
        p.services["dispatcher"] = Dispatcher(p.bus, p.backend, p.session_factory).subscribe()
    p.start()
    yield p
    p.stop()


@pytest.fixture
def app(platform: Any, settings: Settings) -> Flask:
    from agent_console.app import create_app

    return create_app(settings, platform=platform)


def login(app: Flask, who: str, password: str) -> tuple[FlaskClient, str]:
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    r = client.post("/login", data={"login": who, "password": password, "csrf_token": token})
    assert r.status_code == 302
    # Login starts a fresh session, so the page after it carries the token to use from now on.
    page = client.get("/", follow_redirects=True).get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    return client, token


def post(client: FlaskClient, token: str, url: str, body: dict[str, Any] | None = None) -> Any:
    r = client.post(url, json=body or {}, headers={"X-CSRFToken": token})
    assert r.status_code == 200, (url, r.status_code, r.get_json())
    return r.get_json()


def caller_through_ivr(platform: Any, phone: str, pin: str, choice: str) -> str:
    backend = platform.backend
    call_id: str = backend.place_call(phone)
    for _ in range(8):
        action = backend.last_action(call_id)
        if isinstance(action, Enqueue):
            return call_id
        assert isinstance(action, Gather), action
        ids = {p.id for p in action.prompts}
        backend.press(call_id, pin if "enter_pin" in ids else choice)
    raise AssertionError(f"caller never reached a queue: {backend.heard_ids(call_id)}")


def test_call_from_ivr_to_console_transfer_and_wrap_up(app: Flask, platform: Any, tmp_path: Path) -> None:
    from agent_console.context import EXTENSION_KEY
    from callcentre.demo_data import AGENT_PASSWORD, demo_customer

    console = app.extensions[EXTENSION_KEY]
    ada, ada_token = login(app, "agent01", AGENT_PASSWORD)  # billing 5
    ben, ben_token = login(app, "agent02", AGENT_PASSWORD)  # billing 4
    boss, _ = login(app, "supervisor", "demo-supervisor")
    with platform.session_factory() as db:
        ids = {a.login: a.id for a in db.scalars(select(Agent))}
    ada_push = console.hub.subscribe(ids["agent01"], supervisor=False)
    post(ada, ada_token, "/api/agent/state", {"state": "available"})

    customer = demo_customer(3)
    call_id = caller_through_ivr(platform, customer["phone"], customer["pin"], "1")

    # The dispatcher offered it to the only available agent; the console pushed the offer.
    offer = ada_push.messages.get(timeout=2)
    while offer["type"] != "offer":
        offer = ada_push.messages.get(timeout=2)
    assert offer["data"]["call_id"] == call_id
    current = ada.get("/api/agent/current").get_json()
    assert current["state"] == "ringing" and current["call_id"] == call_id
    pop = current["screen_pop"]
    assert pop["call"]["reason"] == "billing" and pop["call"]["queue"] == "billing"
    assert pop["call"]["route_why"], "the router's explanation reaches the screen pop"
    assert pop["customer"]["name"] == customer["name"]
    keys = {i["key"]: i for i in pop["ivr"]}
    assert any(i["verified"] for i in pop["ivr"])
    assert all(i["value"] == "••••" for i in pop["ivr"] if i["sensitive"])
    assert "reason" in keys or "menu" in str(keys)

    post(ada, ada_token, f"/api/calls/{call_id}/answer")
    assert ada.get("/api/agent/current").get_json()["state"] == "on_call"
    assert platform.backend.calls[call_id].connected_agent == ids["agent01"]
    assert post(ada, ada_token, f"/api/calls/{call_id}/hold", {"on": True}) == {"ok": True, "on_hold": True}
    assert platform.backend.calls[call_id].on_hold
    post(ada, ada_token, f"/api/calls/{call_id}/hold", {"on": False})
    assert not platform.backend.calls[call_id].on_hold
    # The memory backend has no mute or keypad: refused with the reason the page shows.
    r = ada.post(f"/api/calls/{call_id}/dtmf", json={"digits": "1"}, headers={"X-CSRFToken": ada_token})
    assert r.status_code == 409 and "keypad" in r.get_json()["error"]
    r = ada.post(f"/api/calls/{call_id}/dtmf", json={"digits": "1; drop"}, headers={"X-CSRFToken": ada_token})
    assert r.status_code == 400

    # Blind transfer to Ben with a reason and a note, through the dispatcher.
    post(ben, ben_token, "/api/agent/state", {"state": "available"})
    r = ada.post(f"/api/calls/{call_id}/transfer", json={"kind": "blind", "target_type": "agent",
                 "target": "agent02", "reason": "specialist", "note": ""}, headers={"X-CSRFToken": ada_token})
    assert r.status_code == 400 and "note" in r.get_json()["error"]
    moved = post(ada, ada_token, f"/api/calls/{call_id}/transfer", {
        "kind": "blind", "target_type": "agent", "target": "agent02", "reason": "specialist",
        "note": "Disputes the roaming charge; already verified."})
    assert moved["target"] == f"agent:{ids['agent02']}"
    assert ada.get("/api/agent/current").get_json()["state"] == "wrap_up"

    ben_view = ben.get("/api/agent/current").get_json()
    assert ben_view["state"] == "ringing" and ben_view["call_id"] == call_id
    notes = ben_view["screen_pop"]["transfer_notes"]
    assert notes and notes[0]["transfer_note"] == "Disputes the roaming charge; already verified."
    assert notes[0]["transfer_reason"] == "specialist"
    assert ben_view["screen_pop"]["ivr"] == pop["ivr"], "the same context travels, nothing asked again"

    post(ben, ben_token, f"/api/calls/{call_id}/answer")
    post(ada, ada_token, f"/api/calls/{call_id}/wrap-up", {"disposition": "escalated", "resolved": False,
                                                          "notes": "Sent to Ben."})
    post(ben, ben_token, f"/api/calls/{call_id}/hangup")
    assert ben.get("/api/agent/current").get_json()["state"] == "wrap_up"
    post(ben, ben_token, f"/api/calls/{call_id}/wrap-up", {"disposition": "resolved", "resolved": True,
                                                          "notes": "Roaming charge refunded."})
    assert ben.get("/api/me").get_json()["state"] == "available"

    with platform.session_factory() as db:
        call = db.get(Call, call_id)
        assert call is not None and call.state == "ended"
        assert call.disposition == "resolved" and call.resolved is True
        assert "[agent01] Sent to Ben." in call.wrap_up_note
        assert "[agent02] Roaming charge refunded." in call.wrap_up_note
        record = db.scalars(select(TransferRecord).where(TransferRecord.call_id == call_id)).one()
        assert (record.status, record.to_agent_id) == ("completed", ids["agent02"])

    board = boss.get("/api/wallboard").get_json()
    billing = next(q for q in board["queues"] if q["name"] == "billing")
    assert billing["metrics"]["offered"] >= 1 and billing["metrics"]["answered"] >= 1
    assert billing["metrics"]["transfer_rate"] is not None and billing["metrics"]["transfer_rate"] > 0
    states = {a["login"]: a["state"] for a in board["agents"]}
    assert states["agent01"] == "available" and states["agent02"] == "available"


def test_warm_transfer_consults_then_completes_or_returns(app: Flask, platform: Any) -> None:
    from callcentre.demo_data import AGENT_PASSWORD, demo_customer

    ada, ada_token = login(app, "agent01", AGENT_PASSWORD)
    ben, ben_token = login(app, "agent02", AGENT_PASSWORD)
    for number, finish in ((6, "return"), (9, "complete")):
        post(ada, ada_token, "/api/agent/state", {"state": "available"})
        customer = demo_customer(number)
        call_id = caller_through_ivr(platform, customer["phone"], customer["pin"], "1")
        assert ada.get("/api/agent/current").get_json()["call_id"] == call_id
        post(ada, ada_token, f"/api/calls/{call_id}/answer")
        post(ben, ben_token, "/api/agent/state", {"state": "available"})
        started = post(ada, ada_token, f"/api/calls/{call_id}/transfer", {
            "kind": "warm", "target_type": "agent", "target": "agent02", "reason": "consult",
            "note": "Can you confirm the refund rule?"})
        assert started["status"] == "consulting"
        assert platform.backend.calls[call_id].on_hold, "the caller waits on hold during the consultation"
        mine = ada.get("/api/agent/current").get_json()
        assert mine["state"] == "on_call" and mine["leg"]["consulting_transfer_id"] == started["transfer_id"]
        assert ben.get("/api/agent/current").get_json()["screen_pop"]["transfer_notes"] == []  # not handed over yet
        post(ben, ben_token, f"/api/calls/{call_id}/answer")
        post(ada, ada_token, f"/api/calls/{call_id}/transfer/{finish}")
        assert not platform.backend.calls[call_id].on_hold
        if finish == "return":
            assert ada.get("/api/agent/current").get_json()["state"] == "on_call"
            assert ben.get("/api/agent/current").get_json()["state"] == "wrap_up"
            post(ben, ben_token, f"/api/calls/{call_id}/wrap-up", {"disposition": "info_given", "resolved": True})
            post(ada, ada_token, f"/api/calls/{call_id}/hangup")
            post(ada, ada_token, f"/api/calls/{call_id}/wrap-up", {"disposition": "resolved", "resolved": True})
        else:
            assert ada.get("/api/agent/current").get_json()["state"] == "wrap_up"
            assert ben.get("/api/agent/current").get_json()["state"] == "on_call"
            post(ada, ada_token, f"/api/calls/{call_id}/wrap-up", {"disposition": "escalated", "resolved": False})
            post(ben, ben_token, f"/api/calls/{call_id}/hangup")
            post(ben, ben_token, f"/api/calls/{call_id}/wrap-up", {"disposition": "resolved", "resolved": True})
        with platform.session_factory() as db:
            record = db.scalars(select(TransferRecord).where(TransferRecord.call_id == call_id)).one()
            assert record.status == ("returned" if finish == "return" else "completed")
    r = ada.post("/api/calls/call-nope/transfer/complete", headers={"X-CSRFToken": ada_token})
    assert r.status_code == 409
