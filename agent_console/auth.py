"""Login, logout, server-side sessions, roles and login throttling.

The signed Flask cookie carries only a random session token; the token is looked up in
``console_sessions`` on every request, so logout and expiry are enforced by the server.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar, cast

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from agent_console.context import get_console
from agent_console.extensions import limiter, login_manager
from agent_console.services import audit
from callcentre.db.base import utcnow
from callcentre.db.models import Agent, ConsoleSession
from callcentre.db.session import session_scope
from callcentre.passwords import verify_password

bp = Blueprint("auth", __name__)

ROLES = ("agent", "supervisor", "admin")
SUPERVISORS = ("supervisor", "admin")
# A dummy hash verified when the login does not exist, so timing does not reveal valid logins.
_DUMMY_HASH: list[str] = []


@dataclass(frozen=True)
class ConsoleUser:
    """The logged-in person as Flask-Login sees them; ``get_id`` is the server-side session token."""

    agent_id: int
    login: str
    name: str
    role: str
    token: str

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def get_id(self) -> str:
        return self.token

    @property
    def is_supervisor(self) -> bool:
        return self.role in SUPERVISORS


def wants_json() -> bool:
    return request.path.startswith(("/api/", "/events/"))


def load_user(token: str) -> ConsoleUser | None:
    console = get_console()
    now = utcnow()
    with session_scope(console.session_factory) as db:
        row = db.execute(
            select(ConsoleSession, Agent)
            .join(Agent, Agent.id == ConsoleSession.agent_id)
            .where(ConsoleSession.token == token)
        ).first()
        if row is None:
            return None
        sess, agent = row
        if sess.revoked_at is not None or sess.expires_at <= now or not agent.active:
            return None
        # Touch at most once a minute: a write per request would serialise SQLite under SSE load.
        if (now - sess.last_seen_at).total_seconds() > 60:
            sess.last_seen_at = now
        return ConsoleUser(agent.id, agent.login, agent.name, agent.role, token)


def unauthorized() -> BaseResponse:
    if wants_json():
        return cast(BaseResponse, (jsonify(error="login required"), 401))
    return redirect(url_for("auth.login", next=request.path))


F = TypeVar("F", bound=Callable[..., Any])


def roles_required(*roles: str) -> Callable[[F], F]:
    """Login required, and the user's role must be one of ``roles`` (403 otherwise)."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return unauthorized()
            if current_user.role not in roles:
                if wants_json():
                    return jsonify(error="forbidden for role " + current_user.role), 403
                return render_template("error.html", code=403, message="This page is not for your role."), 403
            return view(*args, **kwargs)

        return cast(F, wrapped)

    return decorator


def user() -> ConsoleUser:
    return cast(ConsoleUser, current_user._get_current_object())


def _login_limit() -> str:
    return str(current_app.config["LOGIN_RATE_LIMIT"])


def _failed(response: BaseResponse) -> bool:
    # Only failed attempts count towards the limit, so a shift of agents logging in from one NAT is fine.
    return response.status_code != 302


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"], deduct_when=_failed)
def login() -> Any:
    if request.method == "GET":
        return render_template("login.html")
    console = get_console()
    login_name = (request.form.get("login") or "").strip()
    password = request.form.get("password") or ""
    if not login_name or not password:
        flash("Enter your login and password.")
        return render_template("login.html", login=login_name), 400
    with session_scope(console.session_factory) as db:
        agent = db.scalar(select(Agent).where(Agent.login == login_name))
        ok = agent is not None and agent.active and _check_password(agent.password_hash, password)
        if not ok or agent is None:
            if agent is None:
                _check_password(_dummy_hash(), password)
            audit.record(
                db,
                "login_failed",
                actor_agent_id=agent.id if agent else None,
                actor=login_name[:64],
                detail={"client": request.remote_addr or ""},
            )
            flash("Wrong login or password.")
            return render_template("login.html", login=login_name), 401
        token = secrets.token_urlsafe(32)
        hours = float(current_app.config["SESSION_HOURS"])
        db.add(
            ConsoleSession(
                token=token,
                agent_id=agent.id,
                expires_at=utcnow() + timedelta(hours=hours),
                client=(request.remote_addr or "")[:64],
            )
        )
        audit.record(db, "login", actor_agent_id=agent.id, actor=agent.login, detail={"role": agent.role})
        console_user = ConsoleUser(agent.id, agent.login, agent.name, agent.role, token)
    session.clear()
    login_user(console_user)
    target = request.args.get("next") or ""
    if not target.startswith("/") or target.startswith("//"):
        target = url_for("auth.home")
    return redirect(target)


def _check_password(password_hash: str, password: str) -> bool:
    try:
        return bool(verify_password(password_hash, password))
    except Exception:
        return False


def _dummy_hash() -> str:
    if not _DUMMY_HASH:
        from callcentre.passwords import hash_password

        _DUMMY_HASH.append(hash_password(secrets.token_hex(8)))
    return _DUMMY_HASH[0]


@bp.route("/logout", methods=["POST"])
@roles_required(*ROLES)
def logout() -> BaseResponse:
    me = user()
    console = get_console()
    with session_scope(console.session_factory) as db:
        sess = db.scalar(select(ConsoleSession).where(ConsoleSession.token == me.token))
        if sess is not None and sess.revoked_at is None:
            sess.revoked_at = utcnow()
        audit.record(db, "logout", actor_agent_id=me.agent_id, actor=me.login)
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


@bp.route("/")
@roles_required(*ROLES)
def home() -> BaseResponse:
    if user().is_supervisor:
        return redirect(url_for("supervisor.wallboard"))
    return redirect(url_for("agent.console_page"))


login_manager.user_loader(load_user)
login_manager.unauthorized_handler(unauthorized)


def too_many_attempts(_error: Exception) -> tuple[Response | str, int]:
    if wants_json():
        return jsonify(error="too many attempts; wait a minute"), 429
    flash("Too many login attempts. Wait a minute and try again.")
    return render_template("login.html"), 429
