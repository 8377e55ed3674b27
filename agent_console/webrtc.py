"""WebRTC signalling for the in-browser softphone, over the console's authenticated JSON API.

Only a logged-in agent gets a session, and only their own: the offer is answered for the agent of
the login session (never an id from the request). Media for a call reaches a session only when the
backend rings that agent (see ``telephony/webrtc/gateway.py``). Non-trickle ICE: the browser sends
its offer once its candidates are gathered, candidates outside ``webrtc.allowed_networks`` are
dropped, and the answer carries ours (only from ``webrtc.interfaces``).

While an agent's session is down the agent is set Not Ready (reason ``softphone``) so the router
offers them nothing they cannot hear; when it is up again they go back to Available.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify, request
from flask.blueprints import BlueprintSetupState

from agent_console.auth import roles_required, user
from agent_console.context import EXTENSION_KEY, Console, get_console
from callcentre.bus import EventBus
from callcentre.db.base import utcnow
from callcentre.db.models import Agent
from callcentre.db.session import session_scope
from callcentre.domain.agent_state import AgentState
from callcentre.domain.events import AgentStateChanged
from telephony.webrtc.gateway import GatewayError, WebRtcGateway
from telephony.webrtc.quality import save_quality
from telephony.webrtc.session import SignallingError

log = logging.getLogger(__name__)
bp = Blueprint("webrtc", __name__, url_prefix="/api/webrtc")

SOFTPHONE_REASON = "softphone"
MAX_SDP = 64 * 1024


def gateway_of(console: Console) -> WebRtcGateway | None:
    gateway = getattr(console.backend, "webrtc_gateway", None)
    return gateway if isinstance(gateway, WebRtcGateway) else None


class SessionWatch:
    """Agent state follows the audio session: down → Not Ready (softphone), up again → Available."""

    def __init__(self, console: Console) -> None:
        self.factory = console.session_factory
        self.bus: EventBus = console.bus

    def __call__(self, agent_id: int, state: str) -> None:
        event = None
        with session_scope(self.factory) as db:
            agent = db.get(Agent, agent_id)
            if agent is None:
                return
            if state == "connected":
                if agent.state == AgentState.NOT_READY.value and agent.state_reason == SOFTPHONE_REASON:
                    event = self._set(agent, AgentState.AVAILABLE, "")
            elif agent.state == AgentState.AVAILABLE.value:
                event = self._set(agent, AgentState.NOT_READY, SOFTPHONE_REASON)
        if event is not None:
            self.bus.publish(event)

    @staticmethod
    def _set(agent: Agent, state: AgentState, reason: str) -> AgentStateChanged:
        agent.state = state.value
        agent.state_reason = reason
        agent.state_since = utcnow()
        return AgentStateChanged(agent.id, state.value, reason, at=agent.state_since)


@bp.record_once
def _wire(state: BlueprintSetupState) -> None:
    console: Console = state.app.extensions[EXTENSION_KEY]
    gateway = gateway_of(console)
    if gateway is None:
        return
    gateway.on_session_state = SessionWatch(console)
    factory = console.session_factory
    gateway.on_quality = lambda call_id, agent_id, quality: save_quality(factory, call_id, agent_id, quality)


@bp.app_context_processor
def _softphone_kind() -> dict[str, Any]:
    """``softphone_kind`` for the agent page: ``webrtc`` for browser agents when a gateway runs."""
    from flask_login import current_user

    kind = "sip"
    console = get_console()
    if getattr(current_user, "is_authenticated", False) and gateway_of(console) is not None:
        with console.session_factory() as db:
            agent = db.get(Agent, current_user.agent_id)
            if agent is not None and agent.softphone == "browser":
                kind = "webrtc"
    return {"softphone_kind": kind}


def _gateway_or_503() -> WebRtcGateway | Any:
    gateway = gateway_of(get_console())
    if gateway is None:
        return jsonify(error="this platform has no WebRTC gateway; use a SIP phone"), 503
    return gateway


@bp.get("/config")
@roles_required("agent")
def config() -> Any:
    gateway = gateway_of(get_console())
    if gateway is None:
        return jsonify(enabled=False, ice_servers=[], state=None, session=None)
    me = user().agent_id
    return jsonify(enabled=True, ice_servers=gateway.ice_servers, state=gateway.session_state(me),
                   session=gateway.session_id(me))


@bp.post("/offer")
@roles_required("agent")
def offer() -> Any:
    gateway = _gateway_or_503()
    if not isinstance(gateway, WebRtcGateway):
        return gateway
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
        return jsonify(error='send {"type": "offer", "sdp": "..."}'), 400
    if len(body["sdp"]) > MAX_SDP:
        return jsonify(error="the offer is too large"), 413
    try:
        answer = gateway.offer(user().agent_id, body["sdp"])
    except SignallingError as exc:
        return jsonify(error=str(exc)), 400
    except GatewayError as exc:
        return jsonify(error=str(exc)), 503
    return jsonify(type="answer", sdp=answer, session=gateway.session_id(user().agent_id))


@bp.post("/close")
@roles_required("agent")
def close() -> Any:
    gateway = _gateway_or_503()
    if not isinstance(gateway, WebRtcGateway):
        return gateway
    try:
        gateway.close_session(user().agent_id)
    except GatewayError as exc:
        return jsonify(error=str(exc)), 503
    return jsonify(state="closed")
