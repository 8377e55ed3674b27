"""The call state machine: one explicit table of legal moves."""

from __future__ import annotations

from enum import StrEnum

from callcentre.domain.errors import IllegalTransition


class CallState(StrEnum):
    NEW = "new"
    """Signalled, not yet answered by the platform."""
    IVR = "ivr"
    QUEUED = "queued"
    OFFERING = "offering"
    """Reserved for an agent whose phone is ringing."""
    CONNECTED = "connected"
    ON_HOLD = "on_hold"
    TRANSFERRING = "transferring"
    SURVEY = "survey"
    ENDED = "ended"


_S = CallState
TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    _S.NEW: frozenset({_S.IVR, _S.QUEUED, _S.ENDED}),
    _S.IVR: frozenset({_S.QUEUED, _S.TRANSFERRING, _S.ENDED}),
    _S.QUEUED: frozenset({_S.OFFERING, _S.TRANSFERRING, _S.ENDED}),
    _S.OFFERING: frozenset({_S.CONNECTED, _S.QUEUED, _S.ENDED}),
    _S.CONNECTED: frozenset({_S.ON_HOLD, _S.TRANSFERRING, _S.SURVEY, _S.ENDED}),
    _S.ON_HOLD: frozenset({_S.CONNECTED, _S.TRANSFERRING, _S.ENDED}),
    _S.TRANSFERRING: frozenset({_S.OFFERING, _S.QUEUED, _S.CONNECTED, _S.ENDED}),
    _S.SURVEY: frozenset({_S.ENDED}),
    _S.ENDED: frozenset(),
}


def check_transition(call_id: str, current: CallState | str, target: CallState | str) -> CallState:
    """Return ``target`` as a CallState if the move is legal, else raise :class:`IllegalTransition`."""
    try:
        src, dst = CallState(current), CallState(target)
    except ValueError as exc:
        raise IllegalTransition(call_id, str(current), str(target)) from exc
    if dst not in TRANSITIONS[src]:
        raise IllegalTransition(call_id, src.value, dst.value)
    return dst
