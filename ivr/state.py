"""What the engine remembers about one call between steps, and what the caller can do.

``IvrState`` is plain, immutable data with a JSON form (:func:`state_to_dict` /
:func:`state_from_dict`) so stateless backends (Twilio webhooks, FastAGI) can keep it between
requests in any process.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from callcentre.domain.context import CallContext, ContextItem


@dataclass(frozen=True)
class CallInfo:
    call_id: str
    caller_id: str
    dialled: str
    now: datetime
    """Arrival time (timezone-aware); business-hours checks use it."""


@dataclass(frozen=True)
class DigitsInput:
    digits: str


@dataclass(frozen=True)
class SpeechInput:
    text: str
    confidence: float


@dataclass(frozen=True)
class NoInput:
    """The caller said and pressed nothing before the gather timed out."""


IvrInput = DigitsInput | SpeechInput | NoInput


@dataclass(frozen=True)
class IvrState:
    call: CallInfo
    step: str
    context: CallContext
    attempts: int = 0
    """Failed inputs at the current step (and phase)."""
    phase: str = ""
    """Sub-step of ``identify``: ``account`` or ``pin``."""
    visits: tuple[tuple[str, int], ...] = ()
    customer_id: int | None = None
    customer_tier: str = ""
    pending_account: str = ""
    """Account number typed but not yet verified by a PIN."""
    queue: str = ""
    skills: tuple[tuple[str, int], ...] = ()
    priority: int = 0
    language: str = "en"
    finished: bool = False
    trail: tuple[str, ...] = field(default=())
    """Steps entered, in order (for reports: where callers abandon)."""

    def visit_count(self, step: str) -> int:
        return dict(self.visits).get(step, 0)

    def visiting(self, step: str) -> IvrState:
        counts = dict(self.visits)
        counts[step] = counts.get(step, 0) + 1
        return replace(self, step=step, attempts=0, phase="", visits=tuple(counts.items()),
                       trail=(*self.trail, step))


def _item_to_dict(item: ContextItem) -> dict[str, Any]:
    return {"key": item.key, "value": item.value, "step": item.step, "verified": item.verified,
            "sensitive": item.sensitive, "at": item.at.isoformat() if item.at else None}


def _item_from_dict(data: dict[str, Any]) -> ContextItem:
    at = datetime.fromisoformat(data["at"]) if data.get("at") else None
    return ContextItem(data["key"], data["value"], data["step"], bool(data["verified"]),
                       bool(data["sensitive"]), at)


def state_to_dict(state: IvrState) -> dict[str, Any]:
    return {
        "call": {"call_id": state.call.call_id, "caller_id": state.call.caller_id,
                 "dialled": state.call.dialled, "now": state.call.now.isoformat()},
        "step": state.step,
        "context": [_item_to_dict(i) for i in state.context.items],
        "attempts": state.attempts,
        "phase": state.phase,
        "visits": [list(v) for v in state.visits],
        "customer_id": state.customer_id,
        "customer_tier": state.customer_tier,
        "pending_account": state.pending_account,
        "queue": state.queue,
        "skills": [list(s) for s in state.skills],
        "priority": state.priority,
        "language": state.language,
        "finished": state.finished,
        "trail": list(state.trail),
    }


def state_from_dict(data: dict[str, Any]) -> IvrState:
    call = CallInfo(data["call"]["call_id"], data["call"]["caller_id"], data["call"]["dialled"],
                    datetime.fromisoformat(data["call"]["now"]))
    context = CallContext(call.call_id, tuple(_item_from_dict(i) for i in data["context"]))
    return IvrState(
        call=call, step=data["step"], context=context, attempts=int(data["attempts"]),
        phase=data["phase"], visits=tuple((str(s), int(n)) for s, n in data["visits"]),
        customer_id=data["customer_id"], customer_tier=data["customer_tier"],
        pending_account=data["pending_account"], queue=data["queue"],
        skills=tuple((str(s), int(n)) for s, n in data["skills"]), priority=int(data["priority"]),
        language=data["language"], finished=bool(data["finished"]), trail=tuple(data["trail"]),
    )
