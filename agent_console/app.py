"""Application factory for the agent console and supervisor wallboard.

``create_app(settings, platform=None, test_config=None)``: ``platform`` (from
``callcentre.bootstrap.build_platform``) supplies the bus, the session factory and the telephony
backend; without one the console builds its own database session factory and an idle bus, which
is enough to log in and browse.
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import Flask, jsonify, render_template, request
from flask_limiter.errors import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from agent_console import agent, api, auth, events, supervisor, webrtc
from agent_console.actions import ConsoleActions
from agent_console.context import EXTENSION_KEY, Console
from agent_console.events import PushHub
from agent_console.extensions import csrf, limiter, login_manager
from agent_console.services.alerts import AlertMonitor, make_sms_sender
from callcentre.bus import EventBus
from callcentre.settings import Settings


def _platform_parts(settings: Settings, platform: Any) -> tuple[Any, EventBus, Any]:
    if platform is not None:
        return platform.session_factory, platform.bus, getattr(platform, "backend", None)
    from callcentre.db.session import make_engine, make_session_factory

    engine = make_engine(settings.database.url, echo=settings.database.echo)
    return make_session_factory(engine), EventBus(), None


def create_app(settings: Settings, platform: Any = None, test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        # Empty secret: a random key per process, so every session ends when the server restarts.
        SECRET_KEY=settings.http.secret_key or secrets.token_hex(32),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_HOURS=12,
        LOGIN_RATE_LIMIT=settings.http.login_rate_limit,
        RATELIMIT_HEADERS_ENABLED=True,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the (server-side) session
        WRAP_UP_SECONDS=60,
        # [wallboard] settings; the Flask config keys stay the transport so test_config can still override.
        ALERT_LONGEST_WAIT_SECONDS=settings.wallboard.alert_longest_wait_seconds,
        ALERT_MIN_CSAT=settings.wallboard.alert_min_csat,
        ALERT_SMS_MIN_INTERVAL_SECONDS=settings.wallboard.alert_sms_min_interval_seconds,
    )
    if test_config:
        app.config.update(test_config)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the documented field order

    session_factory, bus, backend = _platform_parts(settings, platform)
    services = getattr(platform, "services", None) or {}
    actions = ConsoleActions(session_factory, bus, backend, dispatcher=services.get("dispatcher"))
    hub = PushHub()
    hub.attach(bus)
    alerts = AlertMonitor(
        sms=make_sms_sender(settings.twilio, app.config.get("TWILIO_HTTP_CLIENT")),
        min_interval_seconds=float(app.config["ALERT_SMS_MIN_INTERVAL_SECONDS"]),
    )
    app.extensions[EXTENSION_KEY] = Console(
        settings=settings,
        session_factory=session_factory,
        bus=bus,
        actions=actions,
        hub=hub,
        alerts=alerts,
        backend=backend,
    )

    login_manager.init_app(app)
    login_manager.session_protection = "strong"
    csrf.init_app(app)
    limiter.init_app(app)

    for blueprint in (auth.bp, agent.bp, supervisor.bp, api.bp, events.bp, webrtc.bp):
        app.register_blueprint(blueprint)
    if platform is not None and getattr(backend, "name", "") == "twilio":
        from telephony.twilio_webhooks import init_twilio  # /twilio/ webhooks: signed, CSRF-exempt

        init_twilio(app, platform)

    _register_errors(app)

    @app.after_request
    def security_headers(response: Any) -> Any:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        # Everything is served locally: no CDN, no inline script.
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; media-src 'self'",
        )
        return response

    return app


def _register_errors(app: Flask) -> None:
    def wants_json() -> bool:
        return request.path.startswith(("/api/", "/events/"))

    @app.errorhandler(CSRFError)
    def csrf_refused(error: CSRFError) -> Any:
        if wants_json():
            return jsonify(error="missing or wrong CSRF token: " + str(error.description)), 400
        return render_template(
            "error.html",
            code=400,
            message="The form expired or was not sent from this site. Reload the page and try again.",
        ), 400

    @app.errorhandler(RateLimitExceeded)
    def throttled(error: RateLimitExceeded) -> Any:
        return auth.too_many_attempts(error)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        code = error.code or 500
        if wants_json():
            return jsonify(error=error.description or error.name), code
        return render_template("error.html", code=code, message=error.description or error.name), code
