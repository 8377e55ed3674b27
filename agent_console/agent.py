"""Agent pages: the console itself and recording playback (audited, own calls only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, abort, current_app, render_template, send_file
from sqlalchemy import select

from agent_console.actions import NOT_READY_REASONS
from agent_console.auth import roles_required, user
from agent_console.context import get_console
from agent_console.services import audit
from callcentre.db.models import Disposition, Recording
from callcentre.db.session import session_scope

bp = Blueprint("agent", __name__)


@bp.route("/agent")
@roles_required("agent")
def console_page() -> str:
    console = get_console()
    with console.session_factory() as db:
        dispositions = [
            {"code": d.code, "label": d.label, "resolved": d.resolved}
            for d in db.scalars(select(Disposition).order_by(Disposition.code))
        ]
    return render_template(
        "agent.html",
        me=user(),
        dispositions=dispositions,
        not_ready_reasons=NOT_READY_REASONS,
        capabilities=console.actions.capabilities(),
        wrap_up_seconds=current_app.config["WRAP_UP_SECONDS"],
    )


@bp.route("/recordings/<int:recording_id>")
@roles_required("agent", "supervisor", "admin")
def play_recording(recording_id: int) -> Any:
    """Stream a recording. Agents only for calls they handled; every playback is audited."""
    console = get_console()
    me = user()
    with session_scope(console.session_factory) as db:
        rec = db.get(Recording, recording_id)
        if rec is None or rec.purged_at is not None:
            abort(404, "no such recording")
        allowed = me.is_supervisor or console.actions.may_view_call(db, me.agent_id, rec.call_id)
        audit.record(
            db,
            "recording_playback" if allowed else "recording_playback_denied",
            actor_agent_id=me.agent_id,
            actor=me.login,
            target=f"recording:{rec.id}",
            detail={"call_id": rec.call_id},
        )
        path = Path(rec.path)
        if not path.is_absolute():
            path = Path(console.settings.recordings.directory) / path
    if not allowed:
        abort(403, "this recording belongs to another agent's call")
    if not path.is_file():
        abort(404, "the recording file is missing")
    return send_file(path, mimetype="audio/wav", conditional=True)
