"""Console security against the real app, a migrated SQLite database and argon2 hashes:
login required everywhere, roles, recordings, CSRF, throttling, server-side logout and expiry."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from callcentre.db.base import utcnow
from callcentre.db.models import AuditEntry, ConsoleSession
from callcentre.settings import Settings
from tests.e2e.console_seed import PASSWORD, Seeded, seed, simulated_dispatcher_offer


@pytest.fixture
def app(settings: Settings, engine: Any) -> Flask:
    from agent_console.app import create_app

    return create_app(settings.replace("http", login_rate_limit="5 per minute"))


@pytest.fixture
def seeded(app: Flask, tmp_path: Path) -> Seeded:
    return seed(app.extensions["callcentre_console"].session_factory, tmp_path / "recordings")


def csrf_token(client: FlaskClient) -> str:
    page = client.get("/login").get_data(as_text=True)
    match = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert match
    return match.group(1)


def login(app: Flask, who: str, password: str = PASSWORD) -> tuple[FlaskClient, str]:
    client = app.test_client()
    token = csrf_token(client)
    r = client.post("/login", data={"login": who, "password": password, "csrf_token": token})
    assert r.status_code == 302, r.get_data(as_text=True)
    page = client.get(r.location, follow_redirects=True).get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    return client, token


def every_route(app: Flask) -> Iterator[tuple[str, str]]:
    for rule in app.url_map.iter_rules():
        if rule.endpoint in {"static", "auth.login"}:
            continue
        url = rule.rule
        for arg in rule.arguments:
            url = re.sub(rf"<(?:\w+:)?{arg}>", "1" if "id" in arg and "call" not in arg else "listen", url)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield method, url


def test_no_page_or_api_answers_without_login(app: Flask, seeded: Seeded) -> None:
    client = app.test_client()
    routes = list(every_route(app))
    assert len(routes) >= 20
    for method, url in routes:
        if method == "POST":
            # With a valid CSRF token, so only the missing login can be the reason for refusal.
            r = client.open(url, method=method, json={}, headers={"X-CSRFToken": csrf_token(client)})
        else:
            r = client.open(url, method=method)
        if url.startswith(("/api/", "/events/")):
            assert r.status_code == 401, (method, url, r.status_code)
            assert r.json == {"error": "login required"}
        else:
            assert r.status_code == 302 and "/login" in r.location, (method, url, r.status_code)


def test_agent_cannot_open_supervisor_pages(app: Flask, seeded: Seeded) -> None:
    agent, token = login(app, "agent01")
    assert agent.get("/supervisor/").status_code == 403
    assert agent.get("/api/wallboard").status_code == 403
    assert agent.get("/api/wallboard/intraday").status_code == 403
    r = agent.post("/api/supervisor/calls/call-history-1/listen", headers={"X-CSRFToken": token})
    assert r.status_code == 403
    boss, _ = login(app, "supervisor")
    assert boss.get("/supervisor/").status_code == 200
    assert boss.get("/api/wallboard").status_code == 200
    assert boss.get("/agent").status_code == 403  # the agent console is for agents


def test_agent_cannot_play_other_agents_recordings_and_every_playback_is_audited(
    app: Flask, seeded: Seeded
) -> None:
    mine = seeded.recording_id  # agent02 handled the history call
    theirs = seeded.other_recording_id  # agent03's call
    agent2, _ = login(app, "agent02")
    ok = agent2.get(f"/recordings/{mine}")
    assert ok.status_code == 200 and ok.mimetype == "audio/wav" and ok.data[:4] == b"RIFF"
    assert agent2.get(f"/recordings/{theirs}").status_code == 403
    agent1, _ = login(app, "agent01")
    assert agent1.get(f"/recordings/{mine}").status_code == 403
    boss, _ = login(app, "supervisor")
    assert boss.get(f"/recordings/{theirs}").status_code == 200
    assert boss.get("/recordings/99999").status_code == 404

    with app.extensions["callcentre_console"].session_factory() as db:
        rows = db.execute(select(AuditEntry.action, AuditEntry.actor, AuditEntry.target)
                          .where(AuditEntry.action.like("recording_playback%")).order_by(AuditEntry.id)).all()
    assert [tuple(r) for r in rows] == [
        ("recording_playback", "agent02", f"recording:{mine}"),
        ("recording_playback_denied", "agent02", f"recording:{theirs}"),
        ("recording_playback_denied", "agent01", f"recording:{mine}"),
        ("recording_playback", "supervisor", f"recording:{theirs}"),
    ]


def test_agent_cannot_read_or_control_a_call_that_is_not_theirs(app: Flask, seeded: Seeded) -> None:
    console = app.extensions["callcentre_console"]
    simulated_dispatcher_offer(console.session_factory, console.bus, call_id="call-sec-1",
                               agent_id=seeded.agents["agent01"], customer_id=seeded.customer_id)
    agent2, token = login(app, "agent02")
    assert agent2.get("/api/calls/call-sec-1/screen-pop").status_code == 403
    assert agent2.get("/api/calls/call-sec-1/similar").status_code == 403
    for action in ("answer", "hangup", "hold"):
        r = agent2.post(f"/api/calls/call-sec-1/{action}", json={}, headers={"X-CSRFToken": token})
        assert r.status_code == 403, action
    agent1, _ = login(app, "agent01")
    assert agent1.get("/api/calls/call-sec-1/screen-pop").json["call"]["id"] == "call-sec-1"


def test_forms_and_api_posts_without_csrf_token_are_refused(app: Flask, seeded: Seeded) -> None:
    client = app.test_client()
    r = client.post("/login", data={"login": "agent01", "password": PASSWORD})
    assert r.status_code == 400 and b"expired or was not sent from this site" in r.data
    agent, token = login(app, "agent01")
    r = agent.post("/api/agent/state", json={"state": "not_ready", "reason": "break"})
    assert r.status_code == 400 and "CSRF" in r.json["error"]
    r = agent.post("/api/agent/state", json={"state": "not_ready", "reason": "break"},
                   headers={"X-CSRFToken": "forged"})
    assert r.status_code == 400
    r = agent.post("/logout")
    assert r.status_code == 400
    r = agent.post("/api/agent/state", json={"state": "not_ready", "reason": "break"},
                   headers={"X-CSRFToken": token})
    assert r.status_code == 200 and r.json["state"] == "not_ready"


def test_repeated_bad_logins_are_throttled(app: Flask, seeded: Seeded) -> None:
    client = app.test_client()
    token = csrf_token(client)
    for _ in range(5):
        r = client.post("/login", data={"login": "agent01", "password": "wrong", "csrf_token": token})
        assert r.status_code == 401
    r = client.post("/login", data={"login": "agent01", "password": "wrong", "csrf_token": token})
    assert r.status_code == 429
    # Throttled means throttled: even the right password waits.
    r = client.post("/login", data={"login": "agent01", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 429 and b"Too many login attempts" in r.data
    with app.extensions["callcentre_console"].session_factory() as db:
        failed = db.scalars(select(AuditEntry).where(AuditEntry.action == "login_failed")).all()
    assert len(failed) == 5 and all("wrong" not in str(f.detail) for f in failed)


def test_successful_logins_do_not_count_towards_the_limit(app: Flask, seeded: Seeded) -> None:
    for _ in range(8):
        login(app, "agent01")


def test_logout_and_expiry_are_enforced_by_the_server(app: Flask, seeded: Seeded) -> None:
    agent, token = login(app, "agent01")
    cookie = agent.get_cookie("session")
    assert cookie is not None
    assert agent.get("/api/me").status_code == 200
    assert agent.post("/logout", data={"csrf_token": token}).status_code == 302
    # Replaying the old signed cookie does not bring the session back: the server revoked it.
    replay = app.test_client()
    replay.set_cookie("session", cookie.value)
    assert replay.get("/api/me").status_code == 401

    agent, _ = login(app, "agent02")
    assert agent.get("/api/me").status_code == 200
    with app.extensions["callcentre_console"].session_factory() as db:
        for row in db.scalars(select(ConsoleSession).where(ConsoleSession.revoked_at.is_(None))):
            row.expires_at = utcnow() - timedelta(seconds=1)
        db.commit()
    assert agent.get("/api/me").status_code == 401


def test_login_is_audited_and_passwords_are_hashed(app: Flask, seeded: Seeded) -> None:
    login(app, "supervisor")
    with app.extensions["callcentre_console"].session_factory() as db:
        entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "login")).one()
        from callcentre.db.models import Agent

        stored = db.scalars(select(Agent.password_hash).where(Agent.login == "supervisor")).one()
    assert entry.actor == "supervisor" and entry.detail == {"role": "supervisor"}
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


def test_empty_secret_key_means_a_random_key_per_process(settings: Settings, engine: Any) -> None:
    from agent_console.app import create_app

    a, b = create_app(settings), create_app(settings)
    assert settings.http.secret_key == ""
    assert a.config["SECRET_KEY"] != b.config["SECRET_KEY"] and len(a.config["SECRET_KEY"]) >= 32
    fixed = create_app(settings.replace("http", secret_key="from-settings"))
    assert fixed.config["SECRET_KEY"] == "from-settings"


def test_malformed_requests_get_a_clear_answer(app: Flask, seeded: Seeded) -> None:
    agent, token = login(app, "agent01")
    headers = {"X-CSRFToken": token, "Content-Type": "application/json"}
    for body in (b"{not json", b"[1, 2]", b'"text"'):
        r = agent.post("/api/agent/state", data=body, headers=headers)
        assert r.status_code == 400 and r.json == {"error": "send a JSON object"}, body
    r = agent.post("/api/agent/state", json={"state": 5}, headers={"X-CSRFToken": token})
    assert r.status_code == 400 and "text" in r.json["error"]
    r = agent.post("/api/calls/call-history-1/wrap-up", json={"disposition": "resolved", "resolved": "yes"},
                   headers={"X-CSRFToken": token})
    assert r.status_code == 400 and "true or false" in r.json["error"]
    r = agent.post("/api/calls/nope/transfer", json={"kind": "blind", "target_type": "agent", "target": "x" * 500,
                   "reason": "r", "note": "n"}, headers={"X-CSRFToken": token})
    assert r.status_code == 400
    missing = agent.get("/api/no-such-thing")
    assert missing.status_code == 404 and "not found" in missing.json["error"]
