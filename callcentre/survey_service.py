"""Runs the post-call survey on the bus and stores what the caller answered.

When the agent hangs up (``CallHungUp(by="agent")``) on a call whose flow opted in, and the call is
sampled, the caller stays on the line and the survey flow (``ivr/flows/survey.yaml``) runs on the
same :class:`IvrEngine`. Each answer is saved on the ``SurveyResponse`` as soon as it is given (a
caller who hangs up after the score still counts for CSAT), linked to the call, the agent who had
the last leg and the customer. The spoken comment is recorded as its own ``survey_comment``
recording and transcribed by the worker pool; the transcript lands on ``comment_text``.
A low score raises a ``SupervisorAlert`` and opens a ``CallbackTask``.

Query helpers at the end serve the console (agent and customer records) and reporting (CSAT, FCR).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from callcentre.bus import EventBus
from callcentre.caller_input import CALLER_INPUT_EVENTS, CallerInputEvent, ivr_input
from callcentre.db.models import Call, CallbackTask, CallSegment, SupervisorAlert, SurveyResponse
from callcentre.db.session import session_scope
from callcentre.domain.events import CallHungUp
from callcentre.settings import SurveySettings
from ivr.actions import Action, Hangup
from ivr.engine import IvrEngine, NoCustomers
from ivr.flow import Flow, load_flow
from ivr.state import CallInfo, IvrInput, IvrState
from ivr.survey import COMMENT_STEP, SURVEY_FLOW_PATH, SurveyPolicy, answers_from, is_low, should_offer
from telephony.base import TelephonyBackend

log = logging.getLogger(__name__)


class CommentRecorder(Protocol):
    """What the survey needs from the recording service (kept small so either side can change)."""

    def start_part(self, call_id: str, kind: str) -> None: ...

    def finish(self, call_id: str) -> list[int]: ...


@dataclass
class _Running:
    state: IvrState
    survey_id: int
    started: float = field(default_factory=time.monotonic)
    recording_comment: bool = False


STALE_SURVEY_SECONDS = 600.0
"""A survey still open after this long lost its caller without a hang-up event (e.g. a simulated
caller in the demo that never answers); it is closed with what was answered."""


def survey_policy(settings: SurveySettings) -> SurveyPolicy:
    """The ``[survey]`` settings as the pure policy (sampling share, low-score threshold)."""
    return SurveyPolicy(sample_rate=settings.sample_rate, low_score=settings.low_score)


class SurveyService:
    def __init__(self, bus: EventBus, backend: TelephonyBackend, session_factory: sessionmaker[Session], *,
                 enabled: bool = True, policy: SurveyPolicy | None = None, flow: Flow | None = None,
                 recordings: CommentRecorder | None = None, rng: random.Random | None = None) -> None:
        self.bus = bus
        self.backend = backend
        self.sessions = session_factory
        self.enabled = enabled
        self.policy = policy or SurveyPolicy()
        self.engine = IvrEngine(flow or load_flow(SURVEY_FLOW_PATH), NoCustomers())
        self.recordings = recordings
        self.rng = rng or random.Random()
        self._running: dict[str, _Running] = {}
        self._lock = threading.RLock()
        bus.subscribe(CallHungUp, self.on_hung_up)
        for kind in CALLER_INPUT_EVENTS:
            bus.subscribe(kind, self.on_input)

    def in_survey(self, call_id: str) -> bool:
        with self._lock:
            return call_id in self._running

    # -- events ----------------------------------------------------------------------------------

    def on_hung_up(self, event: CallHungUp) -> None:
        with self._lock:
            running = self._running.get(event.call_id)
        if running is not None:
            if event.by != "agent":  # the caller left (or we hung up after "thank you")
                self._end(event.call_id, running)
            return
        if event.by == "agent" and self.enabled:
            self._offer(event.call_id, event.at)

    def on_input(self, event: CallerInputEvent) -> None:
        self._input(event.call_id, ivr_input(event))

    # -- internals ------------------------------------------------------------------------------

    def _offer(self, call_id: str, at: datetime) -> None:
        self._close_stale()
        with session_scope(self.sessions) as session:
            call = session.get(Call, call_id)
            if call is None:
                return
            already = session.scalar(select(func.count()).select_from(SurveyResponse)
                                     .where(SurveyResponse.call_id == call_id))
            segment = session.scalars(
                select(CallSegment).where(CallSegment.call_id == call_id, CallSegment.started_at.is_not(None))
                .order_by(CallSegment.id.desc()).limit(1)
            ).first()
            if already or segment is None or not should_offer(self.policy, self.rng):
                return
            survey = SurveyResponse(call_id=call_id, agent_id=segment.agent_id, customer_id=call.customer_id)
            session.add(survey)
            session.flush()
            survey_id = survey.id
        state, action = self.engine.start(CallInfo(call_id, "", "", at))
        with self._lock:
            self._running[call_id] = _Running(state, survey_id)
        log.info("call %s: survey %s offered", call_id, survey_id)
        self._perform(call_id, action)

    def _close_stale(self) -> None:
        limit = time.monotonic() - STALE_SURVEY_SECONDS
        with self._lock:
            stale = [(c, r) for c, r in self._running.items() if r.started < limit]
        for call_id, running in stale:
            self._end(call_id, running)

    def _input(self, call_id: str, inp: IvrInput) -> None:
        with self._lock:
            running = self._running.get(call_id)
            if running is None:
                return
            state, action = self.engine.step(running.state, inp)
            running.state = state
            self._save(running)
            comment_now = state.step == COMMENT_STEP and not state.finished
        if comment_now and not running.recording_comment and self.recordings is not None:
            running.recording_comment = True
            self.recordings.start_part(call_id, "survey_comment")
        elif not comment_now and running.recording_comment:
            self._stop_comment(call_id, running)
        self._perform(call_id, action)
        if state.finished:
            self._end(call_id, running)

    def _perform(self, call_id: str, action: Action) -> None:
        try:
            self.backend.perform(call_id, action)
        except Exception:  # the caller's leg is gone (backend ended it): the survey ends unanswered
            log.warning("call %s: survey action %s could not be performed", call_id, type(action).__name__)
            with self._lock:
                running = self._running.get(call_id)
            if running is not None and not isinstance(action, Hangup):
                self._end(call_id, running)

    def _stop_comment(self, call_id: str, running: _Running) -> None:
        running.recording_comment = False
        if self.recordings is None:
            return
        ids = self.recordings.finish(call_id)
        if ids:
            with session_scope(self.sessions) as session:
                survey = session.get(SurveyResponse, running.survey_id)
                if survey is not None:
                    survey.comment_recording_id = ids[-1]

    def _save(self, running: _Running) -> None:
        answers = answers_from(running.state.context)
        with session_scope(self.sessions) as session:
            survey = session.get(SurveyResponse, running.survey_id)
            if survey is not None:
                survey.score, survey.solved, survey.completed = answers.score, answers.solved, answers.complete

    def _end(self, call_id: str, running: _Running) -> None:
        with self._lock:
            if self._running.pop(call_id, None) is None:
                return  # already ended (our Hangup and the caller's BYE both arrive)
        if running.recording_comment:
            self._stop_comment(call_id, running)
        answers = answers_from(running.state.context)
        with session_scope(self.sessions) as session:
            survey = session.get(SurveyResponse, running.survey_id)
            if survey is None:
                return
            survey.score, survey.solved, survey.completed = answers.score, answers.solved, answers.complete
            if is_low(answers, self.policy):
                detail = {"score": answers.score, "survey_id": survey.id}
                session.add(SupervisorAlert(kind="low_satisfaction", call_id=call_id, agent_id=survey.agent_id,
                                            customer_id=survey.customer_id, detail=detail))
                session.add(CallbackTask(reason="low_satisfaction", call_id=call_id, customer_id=survey.customer_id,
                                         agent_id=survey.agent_id, survey_id=survey.id))
        log.info("call %s: survey %s ended (complete=%s)", call_id, running.survey_id, answers.complete)


# -- queries for the console and reports ---------------------------------------------------------


def surveys_for_agent(session: Session, agent_id: int, limit: int = 50) -> list[SurveyResponse]:
    return list(session.scalars(select(SurveyResponse).where(SurveyResponse.agent_id == agent_id)
                                .order_by(SurveyResponse.id.desc()).limit(limit)))


def surveys_for_customer(session: Session, customer_id: int, limit: int = 50) -> list[SurveyResponse]:
    return list(session.scalars(select(SurveyResponse).where(SurveyResponse.customer_id == customer_id)
                                .order_by(SurveyResponse.id.desc()).limit(limit)))


@dataclass(frozen=True)
class SurveySummary:
    offered: int
    answered: int
    """Responses with a score (CSAT counts these; a caller may leave before "solved?")."""
    completed: int
    mean_score: float | None
    share_4_5: float | None
    """CSAT as docs/metrics.md defines it: share of scores 4 or 5."""
    response_rate: float | None
    """Completed ÷ offered."""
    solved_rate: float | None
    """Share of "solved" among answers to that question (the caller's side of FCR)."""


def summary(session: Session, *, agent_id: int | None = None, since: datetime | None = None,
            until: datetime | None = None) -> SurveySummary:
    stmt = select(SurveyResponse)
    if agent_id is not None:
        stmt = stmt.where(SurveyResponse.agent_id == agent_id)
    if since is not None:
        stmt = stmt.where(SurveyResponse.created_at >= since)
    if until is not None:
        stmt = stmt.where(SurveyResponse.created_at < until)
    rows = list(session.scalars(stmt))
    scores = [r.score for r in rows if r.score is not None]
    solved = [r.solved for r in rows if r.solved is not None]
    completed = sum(1 for r in rows if r.completed)
    return SurveySummary(
        offered=len(rows), answered=len(scores), completed=completed,
        mean_score=sum(scores) / len(scores) if scores else None,
        share_4_5=sum(1 for s in scores if s >= 4) / len(scores) if scores else None,
        response_rate=completed / len(rows) if rows else None,
        solved_rate=sum(1 for s in solved if s) / len(solved) if solved else None,
    )


def caller_says_unresolved(session: Session, call_ids: list[str]) -> set[str]:
    """Calls whose caller answered "not solved": FCR reporting counts these as not resolved first time."""
    if not call_ids:
        return set()
    stmt = select(SurveyResponse.call_id).where(SurveyResponse.call_id.in_(call_ids),
                                                SurveyResponse.solved.is_(False))
    return set(session.scalars(stmt))
