"""JSON API: the same data and actions the pages use (documented in docs/api.md, static/openapi.json).

Every endpoint needs a login; POSTs need the CSRF token in ``X-CSRFToken`` (the pages read it
from ``<meta name="csrf-token">``). Errors are ``{"error": "..."}`` with a 4xx status.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import select

from agent_console.actions import SUPERVISION_MODES, ActionError, TransferRequest
from agent_console.auth import SUPERVISORS, roles_required, user
from agent_console.context import get_console
from agent_console.services import alerts as alert_rules
from agent_console.services import audit, wallboard
from agent_console.services.screen_pop import build_screen_pop
from agent_console.services.similar import find_similar
from callcentre.db.models import Agent, Call, Disposition, Queue
from callcentre.db.session import session_scope
from callcentre.domain.agent_state import AgentState
from telephony.base import AgentEndpoint

bp = Blueprint("api", __name__, url_prefix="/api")

JsonView = Callable[..., Any]


def _body() -> dict[str, Any]:
    if not request.content_length:
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ActionError(400, "send a JSON object")
    return data


def action(view: JsonView) -> JsonView:
    """Turn ActionError into a JSON error response."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except ActionError as exc:
            return jsonify(error=exc.message), exc.status

    return wrapped


def _text(data: dict[str, Any], key: str, limit: int = 4000) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise ActionError(400, f"{key} must be text")
    if len(value) > limit:
        raise ActionError(400, f"{key} is longer than {limit} characters")
    return value


@bp.get("/me")
@roles_required("agent", "supervisor", "admin")
def me() -> Any:
    console = get_console()
    u = user()
    with console.session_factory() as db:
        agent = db.get(Agent, u.agent_id)
        assert agent is not None
        seg = console.actions.current_call(db, u.agent_id)
        return jsonify(
            agent_id=agent.id,
            login=agent.login,
            name=agent.name,
            role=agent.role,
            state=agent.state,
            reason=agent.state_reason,
            since=agent.state_since.isoformat(),
            call_id=seg.call_id if seg else None,
            capabilities=console.actions.capabilities(),
        )


@bp.post("/agent/state")
@roles_required("agent")
@action
def set_state() -> Any:
    data = _body()
    result = get_console().actions.set_state(user().agent_id, _text(data, "state", 32), _text(data, "reason", 32))
    return jsonify(result)


@bp.get("/agent/current")
@roles_required("agent")
def current() -> Any:
    """The agent's current call with its screen pop (what a reloaded page needs)."""
    console = get_console()
    u = user()
    with console.session_factory() as db:
        agent = db.get(Agent, u.agent_id)
        assert agent is not None
        cur = console.actions.current_call(db, u.agent_id)
        pop = (
            build_screen_pop(
                db,
                cur.call_id,
                viewer_agent_id=u.agent_id,
                callback_max_attempts=console.settings.routing.callback_max_attempts,
            )
            if cur
            else None
        )
        return jsonify(
            state=agent.state,
            reason=agent.state_reason,
            since=agent.state_since.isoformat(),
            call_id=cur.call_id if cur else None,
            screen_pop=pop,
            leg={
                "started": bool(cur and cur.started),
                "ended": bool(cur and cur.ended),
                "consulting_transfer_id": cur.consulting_transfer_id if cur else None,
            },
        )


def _may_view(call_id: str) -> bool:
    u = user()
    if u.is_supervisor:
        return True
    with get_console().session_factory() as db:
        return get_console().actions.may_view_call(db, u.agent_id, call_id)


@bp.get("/calls/<call_id>/screen-pop")
@roles_required("agent", "supervisor", "admin")
def screen_pop(call_id: str) -> Any:
    if not _may_view(call_id):
        return jsonify(error="this call is not yours"), 403
    with get_console().session_factory() as db:
        pop = build_screen_pop(
            db,
            call_id,
            viewer_agent_id=user().agent_id,
            callback_max_attempts=get_console().settings.routing.callback_max_attempts,
        )
    if pop is None:
        return jsonify(error="no such call"), 404
    return jsonify(pop)


@bp.get("/calls/<call_id>/similar")
@roles_required("agent", "supervisor", "admin")
def similar(call_id: str) -> Any:
    """Search earlier resolved calls for this call's reason; ``q`` adds words to the search."""
    if not _may_view(call_id):
        return jsonify(error="this call is not yours"), 403
    words = request.args.get("q", "")[:200]
    with get_console().session_factory() as db:
        call = db.get(Call, call_id)
        if call is None:
            return jsonify(error="no such call"), 404
        return jsonify(results=[s.as_dict() for s in find_similar(db, call, limit=10, text=words)])


@bp.post("/calls/<call_id>/answer")
@roles_required("agent")
@action
def answer(call_id: str) -> Any:
    get_console().actions.answer(user().agent_id, call_id)
    return jsonify(ok=True)


@bp.post("/calls/<call_id>/hold")
@roles_required("agent")
@action
def hold(call_id: str) -> Any:
    on = bool(_body().get("on", True))
    get_console().actions.hold(user().agent_id, call_id, on)
    return jsonify(ok=True, on_hold=on)


@bp.post("/calls/<call_id>/mute")
@roles_required("agent")
@action
def mute(call_id: str) -> Any:
    on = bool(_body().get("on", True))
    get_console().actions.mute(user().agent_id, call_id, on)
    return jsonify(ok=True, muted=on)


@bp.post("/calls/<call_id>/dtmf")
@roles_required("agent")
@action
def dtmf(call_id: str) -> Any:
    get_console().actions.dtmf(user().agent_id, call_id, _text(_body(), "digits", 32))
    return jsonify(ok=True)


@bp.post("/calls/<call_id>/transfer")
@roles_required("agent")
@action
def transfer(call_id: str) -> Any:
    data = _body()
    req = TransferRequest(
        kind=_text(data, "kind", 16) or "blind",
        target_type=_text(data, "target_type", 16),
        target=_text(data, "target", 64),
        reason=_text(data, "reason", 64),
        note=_text(data, "note"),
    )
    return jsonify(get_console().actions.transfer(user().agent_id, call_id, req))


@bp.post("/calls/<call_id>/transfer/complete")
@roles_required("agent")
@action
def transfer_complete(call_id: str) -> Any:
    """Warm transfer: hand the caller over to the consulted agent."""
    return jsonify(get_console().actions.finish_warm_transfer(user().agent_id, call_id, complete=True))


@bp.post("/calls/<call_id>/transfer/return")
@roles_required("agent")
@action
def transfer_return(call_id: str) -> Any:
    """Warm transfer: end the consultation and keep the caller."""
    return jsonify(get_console().actions.finish_warm_transfer(user().agent_id, call_id, complete=False))


@bp.post("/calls/<call_id>/hangup")
@roles_required("agent")
@action
def hangup(call_id: str) -> Any:
    get_console().actions.hangup(user().agent_id, call_id)
    return jsonify(ok=True)


@bp.post("/calls/<call_id>/wrap-up")
@roles_required("agent")
@action
def wrap_up(call_id: str) -> Any:
    data = _body()
    resolved = data.get("resolved")
    if not isinstance(resolved, bool):
        raise ActionError(400, "resolved must be true or false")
    get_console().actions.wrap_up(
        user().agent_id, call_id, _text(data, "disposition", 32), resolved, _text(data, "notes", 8000)
    )
    return jsonify(ok=True)


@bp.get("/transfer-targets")
@roles_required("agent", "supervisor", "admin")
def transfer_targets() -> Any:
    with get_console().session_factory() as db:
        agents = [
            {
                "id": a.id,
                "login": a.login,
                "name": a.name,
                "state": a.state,
                "available": a.state == AgentState.AVAILABLE.value,
            }
            for a in db.scalars(
                select(Agent).where(Agent.active.is_(True), Agent.role == "agent").order_by(Agent.login)
            )
            if a.id != user().agent_id
        ]
        queues = [
            {"name": q.name, "description": q.description} for q in db.scalars(select(Queue).order_by(Queue.name))
        ]
    return jsonify(agents=agents, queues=queues)


@bp.get("/dispositions")
@roles_required("agent", "supervisor", "admin")
def dispositions() -> Any:
    with get_console().session_factory() as db:
        return jsonify(
            dispositions=[
                {"code": d.code, "label": d.label, "resolved": d.resolved}
                for d in db.scalars(select(Disposition).order_by(Disposition.code))
            ]
        )


@bp.get("/wallboard")
@roles_required(*SUPERVISORS)
def wallboard_snapshot() -> Any:
    console = get_console()
    with console.session_factory() as db:
        snap = wallboard.snapshot(db, capabilities=console.actions.capabilities())
    cfg = current_app.config
    active = alert_rules.evaluate(
        snap,
        longest_wait_seconds=float(cfg["ALERT_LONGEST_WAIT_SECONDS"]),
        min_csat=float(cfg["ALERT_MIN_CSAT"]),
    )
    console.alerts.update(active)
    snap["alerts"] = [a.as_dict() for a in active]
    return jsonify(snap)


@bp.get("/wallboard/intraday")
@roles_required(*SUPERVISORS)
def wallboard_intraday() -> Any:
    with get_console().session_factory() as db:
        return jsonify(wallboard.intraday(db))


@bp.post("/supervisor/calls/<call_id>/<mode>")
@roles_required(*SUPERVISORS)
@action
def supervise(call_id: str, mode: str) -> Any:
    """Listen / whisper / barge (or ``stop``): only where the backend can bridge a supervisor in.

    The backend rings the supervisor's own phone (``sip_contact``, like an agent's); asking again with
    another mode switches the running leg; ``stop`` ends it.
    """
    if mode not in (*SUPERVISION_MODES, "stop"):
        raise ActionError(404, "mode is listen, whisper, barge or stop")
    console = get_console()
    caps = console.actions.capabilities()
    cap = caps[mode] if mode != "stop" else caps[SUPERVISION_MODES[0]]
    if not cap["enabled"]:
        raise ActionError(409, cap["reason"])
    u = user()
    with session_scope(console.session_factory) as db:
        if db.get(Call, call_id) is None:
            raise ActionError(404, "no such call")
        me = db.get(Agent, u.agent_id)
        contact = (me.sip_contact if me is not None and me.softphone != "browser" else "") or "browser"
    try:
        console.backend.supervise(call_id, AgentEndpoint(u.agent_id, contact), mode)
    except RuntimeError as exc:  # the backend's refusal (call ended, no agent, no SIP phone) is the answer
        with session_scope(console.session_factory) as db:
            audit.record(db, f"supervise_{mode}_refused", actor_agent_id=u.agent_id, actor=u.login,
                         target=f"call:{call_id}")
        raise ActionError(409, str(exc) or "the call cannot be supervised now") from exc
    with session_scope(console.session_factory) as db:
        audit.record(db, f"supervise_{mode}", actor_agent_id=u.agent_id, actor=u.login, target=f"call:{call_id}")
    return jsonify(ok=True, mode=mode)
