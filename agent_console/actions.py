"""ConsoleActions: the one adapter between console buttons and the platform.

The page never talks to a backend. Each method checks the agent may act on the call, updates
the database (call, segment, agent state) and asks the telephony backend to carry it out where
one is attached. Optional backend powers (mute, DTMF to the caller, supervisor listen/whisper/
barge) are discovered with ``getattr`` and reported by :meth:`capabilities`, so a backend that
lacks one shows a disabled button with the reason instead of a button that silently fails.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from callcentre.bus import EventBus
from callcentre.db.base import utcnow
from callcentre.db.models import (
    Agent,
    Call,
    CallSegment,
    Disposition,
    Queue,
    QueueEntry,
    Reservation,
    TransferRecord,
)
from callcentre.db.session import session_scope
from callcentre.domain.agent_state import AgentState
from callcentre.domain.call_state import TRANSITIONS, CallState
from callcentre.domain.context import CallContext, ContextItem
from callcentre.domain.events import (
    AgentAnswered,
    AgentStateChanged,
    CallHungUp,
    CallOffered,
    CallQueued,
    CallTransferred,
)
from ivr.actions import Transfer
from routing.reservations import CUSTOMER_UNANSWERED
from telephony.base import AgentEndpoint, can_call_back

log = logging.getLogger(__name__)

CUSTOMER_UNANSWERED_REASONS = frozenset(CUSTOMER_UNANSWERED.values())
"""End reasons of a callback leg whose customer never came on the line (``routing.reservations``)."""

NOT_READY_REASONS = ("break", "lunch", "training", "meeting", "admin", "coaching")
TRANSFER_KINDS = ("blind", "warm")
TARGET_TYPES = ("agent", "queue", "number")
SUPERVISION_MODES = ("listen", "whisper", "barge")
RING_SECONDS = 20.0
BUSY_STATES = (AgentState.RINGING.value, AgentState.ON_CALL.value, AgentState.WRAP_UP.value)


class ActionError(Exception):
    """A refused console action; ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class TransferRequest:
    kind: str
    """``blind`` (hand over now) or ``warm`` (stay on until the target answers)."""
    target_type: str
    """``agent``, ``queue`` or ``number``."""
    target: str
    reason: str
    note: str

    def validate(self) -> None:
        if self.kind not in TRANSFER_KINDS:
            raise ActionError(400, f"transfer kind must be one of {', '.join(TRANSFER_KINDS)}")
        if self.target_type not in TARGET_TYPES:
            raise ActionError(400, f"transfer target type must be one of {', '.join(TARGET_TYPES)}")
        if not self.target.strip():
            raise ActionError(400, "choose where to transfer the call")
        if not self.reason.strip():
            raise ActionError(400, "a transfer needs a reason")
        if not self.note.strip():
            raise ActionError(400, "a transfer needs a note for the next agent")
        if len(self.reason) > 64 or len(self.note) > 4000:
            raise ActionError(400, "reason at most 64 characters, note at most 4000")
        if self.target_type == "number" and not all(ch.isdigit() or ch in "+*#" for ch in self.target):
            raise ActionError(400, "a transfer number has digits only (and + * #)")
        if self.target_type == "number" and self.kind == "warm":
            raise ActionError(400, "warm transfer goes to an agent or a queue; numbers are blind")


def _move_call(call: Call, target: CallState) -> bool:
    """Move the call if the state machine allows it; report whether it moved."""
    current = CallState(call.state)
    if current == target:
        return True
    if target in TRANSITIONS[current]:
        call.state = target.value
        return True
    return False


@dataclass(frozen=True)
class CurrentCall:
    """What the console shows for an agent who is not free."""

    call_id: str
    started: bool
    """The agent answered (their leg is or was connected)."""
    ended: bool
    """Their leg is over (hung up or handed on); wrap-up is due."""
    consulting_transfer_id: int | None = None
    """A warm transfer this agent started that waits for them to complete or return it."""


class ConsoleActions:
    """Console buttons → platform.

    With a ``dispatcher`` (the platform's ``routing.dispatcher.Dispatcher``) the console leaves the
    call bookkeeping to it: answering and hanging up go to the telephony backend, whose events the
    dispatcher turns into reservations, segments and agent states; transfers go to
    ``dispatcher.transfer``. Without one (a console on its own, or tests that play the dispatcher),
    the console keeps the same rows itself.
    """

    def __init__(
        self, session_factory: sessionmaker[Session], bus: EventBus, backend: Any = None, dispatcher: Any = None
    ) -> None:
        self.session_factory = session_factory
        self.bus = bus
        self.backend = backend
        self.dispatcher = dispatcher
        self.muted: dict[tuple[str, int], bool] = {}
        self._lock = threading.Lock()
        if dispatcher is None:
            bus.subscribe(CallHungUp, lambda event: self.caller_hung_up(event.call_id))

    # -- what this backend can do --------------------------------------------------------------
    def _answers_remotely(self) -> bool:
        return any(hasattr(self.backend, name) for name in ("answer_agent", "agent_answers"))

    def capabilities(self) -> dict[str, dict[str, Any]]:
        name = getattr(self.backend, "name", "telephony")
        who = f"the {name} backend" if self.backend is not None else "without a telephony backend the console"
        caps: dict[str, dict[str, Any]] = {}

        def cap(feature: str, ok: bool, why: str) -> None:
            caps[feature] = {"enabled": ok, "reason": "" if ok else why}

        cap(
            "answer", self.backend is None or self._answers_remotely(), f"{who} rings your phone: answer the call there"
        )
        cap("hold", self.backend is not None and hasattr(self.backend, "hold"), "no telephony backend is attached")
        cap(
            "mute",
            self.backend is not None and hasattr(self.backend, "mute"),
            f"{who} cannot mute the agent leg; use your phone's mute",
        )
        cap(
            "dtmf",
            self.backend is not None and hasattr(self.backend, "send_dtmf"),
            f"{who} cannot send keypad tones; use your phone's keypad",
        )
        cap(
            "callback",
            self.backend is not None and can_call_back(self.backend),
            f"{who} cannot dial customers back: callbacks keep their place but are not dialled",
        )
        modes = set(getattr(self.backend, "supervision_modes", ()) or ())
        for mode in SUPERVISION_MODES:
            cap(
                mode,
                mode in modes and hasattr(self.backend, "supervise"),
                f"{who} cannot bridge a supervisor into a call ({mode})",
            )
        return caps

    # -- helpers -------------------------------------------------------------------------------
    def _set_agent_state(self, db: Session, agent: Agent, state: AgentState, reason: str = "") -> AgentStateChanged:
        agent.state = state.value
        agent.state_reason = reason
        agent.state_since = utcnow()
        return AgentStateChanged(agent.id, state.value, reason, at=agent.state_since)

    def _leg(self, db: Session, call_id: str, agent_id: int) -> CallSegment | None:
        return db.scalar(
            select(CallSegment)
            .where(CallSegment.call_id == call_id, CallSegment.agent_id == agent_id, CallSegment.ended_at.is_(None))
            .order_by(CallSegment.id.desc())
        )

    def _reserved(self, db: Session, call_id: str, agent_id: int, *, active: bool = True) -> bool:
        stmt = select(Reservation.id).where(Reservation.call_id == call_id, Reservation.agent_id == agent_id)
        if active:
            stmt = stmt.where(Reservation.status == "active")
        return db.scalar(stmt.limit(1)) is not None

    def _open_segment(self, db: Session, call_id: str, agent_id: int) -> CallSegment:
        seg = self._leg(db, call_id, agent_id)
        if seg is None:
            raise ActionError(403, "this call is not yours")
        return seg

    def _call(self, db: Session, call_id: str) -> Call:
        call = db.get(Call, call_id)
        if call is None:
            raise ActionError(404, "no such call")
        return call

    def _publish(self, events: list[object]) -> None:
        for event in events:
            self.bus.publish(event)

    def may_view_call(self, db: Session, agent_id: int, call_id: str) -> bool:
        """An agent sees a call they were offered (a leg or a reservation); supervisors by role."""
        has_leg = db.scalar(
            select(CallSegment.id).where(CallSegment.call_id == call_id, CallSegment.agent_id == agent_id).limit(1)
        )
        return has_leg is not None or self._reserved(db, call_id, agent_id, active=False)

    # -- agent state ---------------------------------------------------------------------------
    def set_state(self, agent_id: int, state: str, reason: str = "") -> dict[str, Any]:
        allowed = {AgentState.AVAILABLE.value, AgentState.NOT_READY.value}
        if state not in allowed:
            raise ActionError(400, "you can choose available or not_ready; the others follow calls")
        if state == AgentState.NOT_READY.value and reason not in NOT_READY_REASONS:
            raise ActionError(400, f"not ready needs a reason: {', '.join(NOT_READY_REASONS)}")
        with session_scope(self.session_factory) as db:
            agent = db.get(Agent, agent_id)
            if agent is None:
                raise ActionError(404, "no such agent")
            if agent.state in (AgentState.RINGING.value, AgentState.ON_CALL.value):
                raise ActionError(409, "finish the call first")
            if agent.state == AgentState.WRAP_UP.value and self.current_call(db, agent_id) is not None:
                raise ActionError(409, "submit the wrap-up first")
            event = self._set_agent_state(db, agent, AgentState(state), reason if state == "not_ready" else "")
        self._publish([event])
        return {"state": event.state, "reason": event.reason, "since": event.at.isoformat()}

    def current_call(self, db: Session, agent_id: int) -> CurrentCall | None:
        """The call the agent is ringing on, talking on or wrapping up; None when free.

        Derived from the agent's state, so submitting the wrap-up (state → available) is what
        releases the call from the console.
        """
        agent = db.get(Agent, agent_id)
        if agent is None or agent.state not in BUSY_STATES:
            return None
        seg = db.scalar(
            select(CallSegment).where(CallSegment.agent_id == agent_id).order_by(CallSegment.id.desc()).limit(1)
        )
        if agent.state == AgentState.RINGING.value and (seg is None or seg.ended_at is not None):
            # Offered by a dispatcher that opens the leg only on answer: the reservation names the call.
            call_id = db.scalar(select(Reservation.call_id).where(Reservation.active_agent_id == agent_id))
            return CurrentCall(call_id, False, False) if call_id else None
        if seg is None:
            return None
        consulting = db.scalar(
            select(TransferRecord.id).where(
                TransferRecord.call_id == seg.call_id,
                TransferRecord.from_agent_id == agent_id,
                TransferRecord.status == "consulting",
            )
        )
        return CurrentCall(seg.call_id, seg.started_at is not None, seg.ended_at is not None, consulting)

    # -- call controls -------------------------------------------------------------------------
    def _backend_answer(self, call_id: str, agent_id: int) -> bool:
        """Ask the backend to answer the agent's leg; True if it did (it then publishes AgentAnswered)."""
        if hasattr(self.backend, "answer_agent"):
            self.backend.answer_agent(call_id, agent_id)
            return True
        if hasattr(self.backend, "agent_answers"):
            try:
                self.backend.agent_answers(call_id)
            except ValueError as exc:
                raise ActionError(409, "the call is no longer ringing for you") from exc
            return True
        return False

    def answer(self, agent_id: int, call_id: str) -> None:
        events: list[object] = []
        with session_scope(self.session_factory) as db:
            call = self._call(db, call_id)
            seg = self._leg(db, call_id, agent_id)
            if seg is None and not self._reserved(db, call_id, agent_id):
                raise ActionError(403, "this call is not offered to you")
            if seg is not None and seg.started_at is not None:
                return
            if self.dispatcher is not None:
                if not self._answers_remotely():
                    raise ActionError(409, self.capabilities()["answer"]["reason"])
            else:
                assert seg is not None
                if not _move_call(call, CallState.CONNECTED):
                    raise ActionError(409, f"the call is {call.state}; it cannot be answered now")
                now = utcnow()
                seg.started_at = now
                if call.answered_at is None:
                    call.answered_at = now
                agent = db.get(Agent, agent_id)
                assert agent is not None
                events.append(self._set_agent_state(db, agent, AgentState.ON_CALL))
                events.extend(self._complete_warm_transfer(db, call_id, agent_id))
        if not self._backend_answer(call_id, agent_id):
            events.append(AgentAnswered(call_id, agent_id))
        self._publish(events)

    def _complete_warm_transfer(self, db: Session, call_id: str, agent_id: int) -> list[object]:
        """Without a dispatcher: when the target of a warm transfer answers, the first agent leaves."""
        events: list[object] = []
        for seg in db.scalars(
            select(CallSegment).where(
                CallSegment.call_id == call_id,
                CallSegment.ended_at.is_(None),
                CallSegment.agent_id != agent_id,
                CallSegment.transfer_kind == "warm",
            )
        ):
            seg.ended_at = utcnow()
            seg.end_reason = "transferred"
            other = db.get(Agent, seg.agent_id) if seg.agent_id is not None else None
            if other is not None:
                events.append(self._set_agent_state(db, other, AgentState.WRAP_UP))
        return events

    def hold(self, agent_id: int, call_id: str, on: bool) -> None:
        with session_scope(self.session_factory) as db:
            call = self._call(db, call_id)
            seg = self._open_segment(db, call_id, agent_id)
            if seg.started_at is None:
                raise ActionError(409, "answer the call first")
            if not _move_call(call, CallState.ON_HOLD if on else CallState.CONNECTED):
                raise ActionError(409, f"the call is {call.state}")
        if self.backend is not None:
            self.backend.hold(call_id, on)

    def mute(self, agent_id: int, call_id: str, on: bool) -> None:
        with session_scope(self.session_factory) as db:
            self._open_segment(db, call_id, agent_id)
        if not self.capabilities()["mute"]["enabled"]:
            raise ActionError(409, self.capabilities()["mute"]["reason"])
        self.backend.mute(call_id, agent_id, on)
        with self._lock:
            self.muted[(call_id, agent_id)] = on

    def dtmf(self, agent_id: int, call_id: str, digits: str) -> None:
        if not digits or len(digits) > 32 or any(ch not in "0123456789*#ABCD" for ch in digits):
            raise ActionError(400, "keypad digits are 0-9, *, # (at most 32)")
        with session_scope(self.session_factory) as db:
            self._open_segment(db, call_id, agent_id)
        if not self.capabilities()["dtmf"]["enabled"]:
            raise ActionError(409, self.capabilities()["dtmf"]["reason"])
        self.backend.send_dtmf(call_id, digits)

    def hangup(self, agent_id: int, call_id: str) -> None:
        """Hang up (or, while still ringing, decline) this agent's leg."""
        if self.dispatcher is not None:
            with self.session_factory() as db:
                seg = self._leg(db, call_id, agent_id)
                ringing = self._reserved(db, call_id, agent_id)
                if seg is None and not ringing:
                    raise ActionError(403, "this call is not yours")
                started = seg is not None and seg.started_at is not None
            if not started and not ringing and self._dialling_customer(call_id):
                # The agent gives up on this attempt while the customer's phone rings: the backend stops
                # dialling and reports CallbackUnanswered("agent-ended"); the dispatcher retries later
                # without counting it against the customer.
                self.backend.hangup(call_id)
                return
            if started:
                self.backend.hangup(call_id)  # CallHungUp → the dispatcher closes legs, agent to wrap-up
            elif hasattr(self.backend, "agent_rejects"):
                self.backend.agent_rejects(call_id)  # AgentNoAnswer → back to its place in the queue
            else:
                raise ActionError(409, "decline the call on your phone")
            return
        events: list[object] = []
        with session_scope(self.session_factory) as db:
            call = self._call(db, call_id)
            seg = self._open_segment(db, call_id, agent_id)
            seg.ended_at = utcnow()
            seg.end_reason = "completed" if seg.started_at else "rejected"
            others_open = db.scalar(
                select(CallSegment.id).where(CallSegment.call_id == call_id, CallSegment.ended_at.is_(None)).limit(1)
            )
            if others_open is None and call.state != CallState.ENDED.value:
                _move_call(call, CallState.ENDED)
                call.ended_at = call.ended_at or utcnow()
            agent = db.get(Agent, agent_id)
            assert agent is not None
            events.append(
                self._set_agent_state(db, agent, AgentState.WRAP_UP if seg.started_at else AgentState.AVAILABLE)
            )
        if self.backend is not None:
            self.backend.hangup(call_id)
        else:
            events.append(CallHungUp(call_id, by="agent"))
        self._publish(events)

    def _dialling_customer(self, call_id: str) -> bool:
        with self.session_factory() as db:
            status = db.scalar(select(QueueEntry.status).where(QueueEntry.call_id == call_id))
        return status == "dialling"

    def caller_hung_up(self, call_id: str) -> None:
        """Without a dispatcher, on CallHungUp: close open agent legs; agents go to wrap-up."""
        events: list[object] = []
        with session_scope(self.session_factory) as db:
            for seg in db.scalars(
                select(CallSegment).where(CallSegment.call_id == call_id, CallSegment.ended_at.is_(None))
            ):
                seg.ended_at = utcnow()
                seg.end_reason = "caller_hung_up" if seg.started_at else "abandoned"
                agent = db.get(Agent, seg.agent_id) if seg.agent_id else None
                if agent is not None and agent.state in (AgentState.RINGING.value, AgentState.ON_CALL.value):
                    state = AgentState.WRAP_UP if seg.started_at else AgentState.AVAILABLE
                    events.append(self._set_agent_state(db, agent, state))
        self._publish(events)

    def _agent_by_login_or_id(self, db: Session, target: str, me: int) -> Agent:
        agent = (
            db.get(Agent, int(target)) if target.isdigit() else db.scalar(select(Agent).where(Agent.login == target))
        )
        if agent is None or not agent.active or agent.role != "agent":
            raise ActionError(404, "no such agent")
        if agent.id == me:
            raise ActionError(400, "you cannot transfer a call to yourself")
        return agent

    def transfer(self, agent_id: int, call_id: str, req: TransferRequest) -> dict[str, Any]:
        req.validate()
        if self.dispatcher is not None:
            return self._transfer_via_dispatcher(agent_id, call_id, req)
        events: list[object] = []
        connect: tuple[int, str] | None = None
        outside: CallContext | None = None
        with session_scope(self.session_factory) as db:
            call = self._call(db, call_id)
            seg = self._open_segment(db, call_id, agent_id)
            if seg.started_at is None:
                raise ActionError(409, "answer the call before transferring it")
            me = db.get(Agent, agent_id)
            assert me is not None
            seg.transfer_kind = req.kind
            seg.transfer_reason = req.reason.strip()
            seg.transfer_note = req.note.strip()
            seg.transfer_target = f"{req.target_type}:{req.target}"[:64]
            if not _move_call(call, CallState.TRANSFERRING):
                raise ActionError(409, f"the call is {call.state}; it cannot be transferred now")
            now = utcnow()
            if req.kind == "blind":
                seg.ended_at = now
                seg.end_reason = "transferred"
                events.append(self._set_agent_state(db, me, AgentState.WRAP_UP))
            if req.target_type == "agent":
                target = self._agent_by_login_or_id(db, req.target, agent_id)
                if target.state != AgentState.AVAILABLE.value:
                    raise ActionError(409, f"{target.name} is not available ({target.state})")
                db.add(CallSegment(call_id=call_id, agent_id=target.id, queue_id=call.queue_id, offered_at=now))
                _move_call(call, CallState.OFFERING)
                events.append(self._set_agent_state(db, target, AgentState.RINGING))
                events.append(CallTransferred(call_id, agent_id, req.kind, f"agent:{target.id}", req.reason, req.note))
                events.append(CallOffered(call_id, target.id, why=f"transfer from agent {agent_id}"))
                connect = (target.id, target.sip_contact or "browser")
            elif req.target_type == "queue":
                queue = db.scalar(select(Queue).where(Queue.name == req.target))
                if queue is None:
                    raise ActionError(404, "no such queue")
                call.queue_id = queue.id
                call.queued_at = now
                _move_call(call, CallState.QUEUED)
                events.append(CallTransferred(call_id, agent_id, "queue", f"queue:{queue.name}", req.reason, req.note))
                skills = tuple(
                    (str(s.get("skill", "")), int(s.get("min_level", 1)))
                    for s in queue.required_skills
                    if isinstance(s, dict)
                )
                events.append(CallQueued(call_id, queue.name, skills, call.priority, call.language))
            else:
                outside = CallContext(
                    call_id,
                    tuple(
                        ContextItem(i.key, i.value, i.step, i.verified, i.sensitive, i.collected_at)
                        for i in call.context_items
                    ),
                )
                seg.ended_at = seg.ended_at or now
                seg.end_reason = "transferred"
                call.outcome = "transferred_out"
                events.append(CallTransferred(call_id, agent_id, "blind", "number", req.reason, req.note))
        if connect is not None and self.backend is not None:
            self.backend.connect_agent(call_id, AgentEndpoint(connect[0], connect[1]), RING_SECONDS)
        if outside is not None and self.backend is not None:
            self.backend.perform(call_id, Transfer(number=req.target, context=outside))
        self._publish(events)
        return {"call_id": call_id, "kind": req.kind, "target": f"{req.target_type}:{req.target}"}

    def _transfer_via_dispatcher(self, agent_id: int, call_id: str, req: TransferRequest) -> dict[str, Any]:
        from routing import transfers

        target = req.target.strip()
        with self.session_factory() as db:
            self._call(db, call_id)
            seg = self._open_segment(db, call_id, agent_id)
            if seg.started_at is None:
                raise ActionError(409, "answer the call before transferring it")
            if req.target_type == "agent":
                target = str(self._agent_by_login_or_id(db, target, agent_id).id)
        kind = "queue" if req.target_type == "queue" and req.kind == "blind" else req.kind
        request = transfers.TransferRequest(
            call_id, agent_id, kind, req.target_type, target, req.reason.strip(), req.note.strip()
        )
        try:
            record = self.dispatcher.transfer(request)
        except transfers.TransferError as exc:
            raise ActionError(409, str(exc)) from exc
        events: list[object] = []
        if record.kind != "warm":
            # transfers.start moved this agent to wrap-up in the database; tell the consoles.
            with self.session_factory() as db:
                me = db.get(Agent, agent_id)
                if me is not None:
                    events.append(AgentStateChanged(agent_id, me.state, at=me.state_since))
        self._publish(events)
        return {
            "call_id": call_id,
            "kind": record.kind,
            "target": f"{record.target_type}:{record.target}",
            "transfer_id": record.id,
            "status": record.status,
        }

    def finish_warm_transfer(self, agent_id: int, call_id: str, complete: bool) -> dict[str, Any]:
        """Complete (hand the caller over) or return (keep the caller) a warm transfer this agent started."""
        if self.dispatcher is None:
            raise ActionError(409, "this warm transfer completes by itself when the other agent answers")
        with self.session_factory() as db:
            record = db.scalar(
                select(TransferRecord).where(
                    TransferRecord.call_id == call_id,
                    TransferRecord.from_agent_id == agent_id,
                    TransferRecord.status == "consulting",
                )
            )
            if record is None:
                raise ActionError(409, "there is no warm transfer of yours to finish on this call")
            transfer_id, consulted = record.id, record.to_agent_id
        from routing import transfers

        try:
            if complete:
                self.dispatcher.complete_warm(transfer_id)
            else:
                self.dispatcher.return_warm(transfer_id)
        except transfers.TransferError as exc:
            raise ActionError(409, str(exc)) from exc
        changed = [agent_id] if complete else [a for a in (consulted,) if a is not None]
        events: list[object] = []
        with self.session_factory() as db:
            for aid in changed:
                agent = db.get(Agent, aid)
                if agent is not None:
                    events.append(AgentStateChanged(aid, agent.state, at=agent.state_since))
        self._publish(events)
        return {"call_id": call_id, "transfer_id": transfer_id, "completed": complete}

    def wrap_up(self, agent_id: int, call_id: str, disposition: str, resolved: bool, notes: str) -> None:
        if len(notes) > 8000:
            raise ActionError(400, "notes at most 8000 characters")
        events: list[object] = []
        with session_scope(self.session_factory) as db:
            call = self._call(db, call_id)
            current = self.current_call(db, agent_id)
            agent = db.get(Agent, agent_id)
            if current is None or current.call_id != call_id or agent is None:
                raise ActionError(403, "this call is not yours to wrap up")
            seg = db.scalar(
                select(CallSegment)
                .where(CallSegment.call_id == call_id, CallSegment.agent_id == agent_id)
                .order_by(CallSegment.id.desc())
                .limit(1)
            )
            if agent.state != AgentState.WRAP_UP.value or seg is None or seg.ended_at is None:
                raise ActionError(409, "hang up or transfer before wrapping up")
            if db.scalar(select(Disposition).where(Disposition.code == disposition)) is None:
                raise ActionError(400, "choose a disposition code")
            if seg.end_reason != "transferred" and seg.end_reason not in CUSTOMER_UNANSWERED_REASONS:
                # The agent who finished the call decides the outcome; one who handed it on, or whose
                # callback attempt the customer did not answer, only adds notes.
                call.disposition = disposition
                call.resolved = resolved
                if call.state == CallState.ENDED.value and call.outcome in ("", "completed", "unresolved", "resolved"):
                    call.outcome = "resolved" if resolved else "unresolved"
            note = notes.strip()
            if note:
                prefix = call.wrap_up_note + "\n" if call.wrap_up_note else ""
                call.wrap_up_note = f"{prefix}[{agent.login}] {note}"
            events.append(self._set_agent_state(db, agent, AgentState.AVAILABLE))
        self._publish(events)
