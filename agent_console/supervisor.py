"""Supervisor pages: the wallboard."""

from __future__ import annotations

from flask import Blueprint, render_template

from agent_console.auth import SUPERVISORS, roles_required, user
from agent_console.context import get_console

bp = Blueprint("supervisor", __name__, url_prefix="/supervisor")


@bp.route("/")
@roles_required(*SUPERVISORS)
def wallboard() -> str:
    console = get_console()
    return render_template("supervisor.html", me=user(), capabilities=console.actions.capabilities())
