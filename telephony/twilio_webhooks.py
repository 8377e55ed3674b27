"""Twilio webhooks under ``/twilio/``: a Flask blueprint, usable standalone or inside the console app.

Every request must carry a valid ``X-Twilio-Signature`` (HMAC-SHA1 of the public URL and the POST
parameters with the auth token, checked by ``twilio.request_validator.RequestValidator``); anything
else gets 403. The public URL is ``twilio.public_base_url`` + the request path, because behind a
proxy the server does not see the address Twilio signed.

Twilio retries a webhook that timed out or failed. Each delivery is keyed by (``CallSid``, step):
the first delivery claims the key in ``webhook_responses`` and stores its TwiML; a retry gets the
same TwiML back and causes no second side effect (no second ``CallArrived``, no digit counted
twice). The IVR state lives in ``backend_calls`` between webhooks, so any worker process can answer
the next one.

Routes (all POST except the prompt audio):

``voice``          incoming call → ``CallArrived`` → the IVR's first action as TwiML
``gather/<seq>``   ``Digits`` / ``SpeechResult`` of Gather number ``seq`` → the next action
``wait``           ``<Enqueue waitUrl>``: position and estimated wait, then a pause (Twilio loops it)
``queue-exit``     ``<Enqueue action>``: the caller left the queue
``agent-answered`` ``<Client statusCallbackEvent="answered">`` → ``AgentAnswered``
``agent-result``   ``<Dial action>``: ``DialCallStatus`` no-answer/busy/failed → ``AgentNoAnswer``, caller re-queued
``status``         call status callback: final status → ``CallHungUp``
``callback-agent``    a callback's agent leg answered (its ``Url``) → ``AgentAnswered``; TwiML dials the customer
``callback-answered`` ``<Number statusCallbackEvent="answered">`` → the customer's leg joins → ``CallbackAnswered``
``callback-result``   ``<Dial action>``: ``DialCallStatus`` completed → ``CallHungUp``; busy / no-answer / failed /
                      canceled → ``CallbackUnanswered`` and the agent's leg ends (``agent-ended`` when the
                      agent's leg itself is over: they or the console ended the attempt)
``callback-status``   the agent leg's status callback: no-answer / busy / failed / canceled → ``AgentNoAnswer``;
                      completed by the platform after answering, before the customer connected → ``agent-ended``
``recording``      recording status callback: ``completed`` → download → ``Recording`` row → transcription job
``prompts/<id>.wav`` (GET) the recorded prompts, for ``<Play>``
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, abort, request, send_from_directory
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import VoiceResponse

from callcentre.bus import EventBus
from callcentre.db.models import BackendCall, Call, Queue, Recording, WebhookResponse
from callcentre.db.session import session_scope
from callcentre.domain.events import (
    AgentAnswered,
    AgentNoAnswer,
    CallArrived,
    CallbackAnswered,
    CallbackUnanswered,
    CallHungUp,
    DigitsReceived,
    InputTimedOut,
    SpeechHeard,
)
from callcentre.domain.ids import new_call_id
from callcentre.ivr_service import IvrService
from ivr.state import state_from_dict, state_to_dict
from telephony.twilio import (
    BACKEND,
    CALLBACK_CUSTOMER,
    CALLBACK_TWIML,
    FINAL_STATUS,
    LEG_MOVED,
    PLATFORM_HANGUP,
    Capture,
    MediaFetcher,
    TwilioBackend,
    fetch_media,
)

log = logging.getLogger(__name__)

XML = "text/xml"
FINAL_STATUSES = {"completed", "busy", "failed", "no-answer", "canceled"}
AGENT_MISSED = {"no-answer", "busy", "failed", "canceled"}
CALLBACK_REASONS = {"busy": "busy", "no-answer": "no-answer", "failed": "failed", "canceled": "failed"}
"""``DialCallStatus`` of a callback's customer leg → ``CallbackUnanswered.reason``. Twilio has no separate
status for a declined call (it reports ``busy`` or ``no-answer``). When the agent's own leg has ended
(``CallStatus=completed`` on the action request, or the platform completed it for the console's hang-up)
the reason is ``agent-ended`` whatever the status of the customer's leg."""
AGENT_ENDED = "agent-ended"
UNKNOWN_CALLERS = {"", "anonymous", "unknown", "restricted", "+266696687"}
"""Twilio reports withheld numbers as ``anonymous`` (and historically ``+266696687``)."""
WaitAnnouncer = Callable[[str, int, float], tuple[int, int | None]]
"""(call id, Twilio's QueuePosition, Twilio's AvgQueueTime) → (position, minutes or None)."""


def _twiml(body: str) -> Response:
    return Response(body, mimetype=XML)


def apology(text: str = "Sorry, we cannot take your call right now. Please call again later.") -> str:
    response = VoiceResponse()
    response.say(text)
    response.hangup()
    return str(response)


class TwilioWebhooks:
    def __init__(self, backend: TwilioBackend, bus: EventBus, ivr: IvrService,
                 session_factory: sessionmaker[Session], *, auth_token: str, public_base_url: str = "",
                 recordings_dir: str | Path = "recordings-data", prompts_dir: Path | None = None,
                 fetch: MediaFetcher = fetch_media, announcer: WaitAnnouncer | None = None,
                 claim_wait_seconds: float = 5.0, perform_timeout: float = 10.0, bus_workers: int = 4) -> None:
        if not auth_token:
            raise ValueError("Twilio webhooks need twilio.auth_token to check X-Twilio-Signature")
        self.backend = backend
        self.bus = bus
        self.ivr = ivr
        self.sessions = session_factory
        self.validator = RequestValidator(auth_token)
        self.public_base_url = public_base_url.rstrip("/")
        self.recordings_dir = Path(recordings_dir)
        self.prompts_dir = prompts_dir
        self.fetch = fetch
        self.announcer = announcer or self._default_announcer
        self.claim_wait_seconds = claim_wait_seconds
        self._downloads: list[threading.Thread] = []
        self.perform_timeout = perform_timeout
        self._bus_worker_count = bus_workers
        self._bus_workers = ThreadPoolExecutor(max_workers=bus_workers, thread_name_prefix="twilio-bus")
        backend.state_saver = self.save_live_state

    # -- signature ---------------------------------------------------------------------------------
    def public_url(self) -> str:
        if not self.public_base_url:
            return request.url
        query = request.query_string.decode()
        return self.public_base_url + request.path + (f"?{query}" if query else "")

    def signature_ok(self) -> bool:
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature:
            return False
        params = request.form.to_dict() if request.method == "POST" else {}
        return bool(self.validator.validate(self.public_url(), params, signature))

    # -- idempotency ---------------------------------------------------------------------------------
    def once(self, ref: str, step: str, produce: Callable[[Session], str], *, first: object | None = None) -> str:
        """Answer (ref, step) once; a retry gets the stored answer and nothing happens twice.

        The first delivery claims the key in its own transaction (with ``first``, e.g. the new
        ``BackendCall``, so no extra commit is spent) before any side effect; ``produce`` then runs
        and gets the session that stores its answer, so it can save state in that same commit.
        """
        if self._claim(ref, step, first):
            try:
                with session_scope(self.sessions) as session:
                    body = produce(session)
                    session.execute(update(WebhookResponse).where(
                        WebhookResponse.backend == BACKEND, WebhookResponse.ref == ref,
                        WebhookResponse.step == step).values(body=body))
                return body
            except Exception:
                self._release(ref, step)
                raise
        # A retry: the stored answer, or (first delivery still running in another worker) wait for it.
        deadline = time.monotonic() + self.claim_wait_seconds
        while True:
            with self.sessions() as session:
                answer = session.scalar(select(WebhookResponse.body).where(
                    WebhookResponse.backend == BACKEND, WebhookResponse.ref == ref, WebhookResponse.step == step))
            if answer:
                return answer
            if time.monotonic() > deadline:
                abort(503)
            time.sleep(0.02)

    def _claim(self, ref: str, step: str, first: object | None = None) -> bool:
        try:
            with session_scope(self.sessions) as session:
                session.add(WebhookResponse(backend=BACKEND, ref=ref, step=step, body=""))
                if first is not None:
                    session.add(first)
            return True
        except IntegrityError:
            return False

    def _release(self, ref: str, step: str) -> None:
        with session_scope(self.sessions) as session:
            session.execute(delete(WebhookResponse).where(
                WebhookResponse.backend == BACKEND, WebhookResponse.ref == ref, WebhookResponse.step == step))

    def _row(self, session: Session, ref: str) -> BackendCall | None:
        return session.scalar(select(BackendCall).where(BackendCall.backend == BACKEND, BackendCall.ref == ref))

    # -- the IVR -------------------------------------------------------------------------------------
    def voice(self, form: dict[str, str]) -> str:
        sid = form.get("CallSid", "")
        if not sid:
            abort(400, "CallSid missing")

        call_id = new_call_id()

        def produce(session: Session) -> str:
            caller = form.get("From", "")
            capture = self._publish_until_performed(call_id, CallArrived(
                call_id, caller_id="" if caller.lower() in UNKNOWN_CALLERS else caller,
                dialled=form.get("To", ""), backend=BACKEND, backend_ref=sid,
            ))
            return self._answer(session, sid, call_id, capture, 1)

        return self.once(sid, "voice", produce, first=BackendCall(backend=BACKEND, ref=sid, call_id=call_id))

    def gather(self, seq: int, form: dict[str, str]) -> str:
        sid = form.get("CallSid", "")
        if not sid:
            abort(400, "CallSid missing")

        def produce(session: Session) -> str:
            row = self._row(session, sid)
            if row is None:
                log.warning("gather for an unknown Twilio call; hanging up")
                return apology()
            if row.webhook_seq == 0:
                row = self._wait_first_answer(session, sid)
            call_id, saved = row.call_id, row.ivr_state
            digits = form.get("Digits", "")
            speech = form.get("SpeechResult", "").strip()
            event: object
            if digits:
                event = DigitsReceived(call_id, digits=digits)
            elif speech:
                event = SpeechHeard(call_id, text=speech, confidence=_confidence(form))
            else:
                event = InputTimedOut(call_id)
            if not saved:
                # Past the IVR (e.g. the post-call survey, run by its own service in this process).
                return self._after_ivr(session, row, event)
            self.ivr.adopt(call_id, state_from_dict(saved))
            return self._answer(session, sid, call_id, self._publish_until_performed(call_id, event), seq + 1)

        return self.once(sid, f"gather-{seq}", produce)

    def _publish_until_performed(self, call_id: str, event: object) -> Capture:
        """Publish on a bus worker and return as soon as the IVR has performed its action.

        Twilio needs only the TwiML; what the event sets off after that (the router looking for an
        agent once the call is queued) goes on in the worker instead of delaying the answer.
        """
        capture = Capture(call_id)

        def run() -> None:
            try:
                with self.backend.capture(call_id, into=capture):
                    self.bus.publish(event)
            finally:
                capture.performed.set()

        self._bus_workers.submit(run)
        if not capture.performed.wait(self.perform_timeout):
            log.error("call %s: the IVR did not act within %.1fs", call_id, self.perform_timeout)
        return capture

    def _answer(self, session: Session, sid: str, call_id: str, capture: Capture, seq: int) -> str:
        action = capture.close()
        if action is None:
            log.error("call %s: the IVR performed nothing for this webhook", call_id)
            return apology()
        twiml = self.backend.render(action, gather_url=self.backend.urls.of(f"gather/{seq}"))
        self._save_state(session, sid, call_id, seq)
        return twiml

    def _save_state(self, session: Session, sid: str, call_id: str, seq: int) -> None:
        state = self.ivr.state_of(call_id)
        session.flush()  # a BackendCall changed through the ORM in this session must not overwrite this
        session.execute(update(BackendCall).where(BackendCall.backend == BACKEND, BackendCall.ref == sid).values(
            ivr_state=state_to_dict(state) if state is not None and not state.finished else None,
            webhook_seq=seq))

    def save_live_state(self, call_id: str) -> int:
        """For an action pushed outside a webhook: the next Gather number, state saved on the call's
        current (newest) leg, the one the action goes to."""
        with self.sessions() as session:
            row = session.scalar(select(BackendCall).where(BackendCall.backend == BACKEND,
                                                           BackendCall.call_id == call_id)
                                 .order_by(BackendCall.id.desc()).limit(1))
            if row is None:
                raise KeyError(call_id)
            sid, seq = row.ref, row.webhook_seq + 1
        with session_scope(self.sessions) as session:
            self._save_state(session, sid, call_id, seq)
        return seq

    # -- queue -----------------------------------------------------------------------------------------
    def _default_announcer(self, call_id: str, twilio_position: int, avg_queue_time: float) -> tuple[int, int | None]:
        position = twilio_position
        try:
            from routing.reservations import position as router_position

            with self.sessions() as session:
                found = router_position(session, call_id)
            if found:
                position = found
        except Exception:  # router tables absent or not wired: Twilio's own position is still right
            log.debug("router position unavailable for %s", call_id)
        minutes = max(1, math.ceil(avg_queue_time / 60)) if avg_queue_time > 0 else None
        return position, minutes

    def wait(self, form: dict[str, str]) -> str:
        sid = form.get("CallSid", "")
        with self.sessions() as session:
            row = self._row(session, sid)
            call_id = row.call_id if row is not None else ""
        position, minutes = self.announcer(call_id, _int(form.get("QueuePosition")),
                                           float(_int(form.get("AvgQueueTime"))))
        response = VoiceResponse()
        text = f"You are number {position} in the queue." if position > 0 else "You are next in the queue."
        if minutes is not None:
            text += f" Your estimated wait is about {minutes} minute{'s' if minutes != 1 else ''}."
        response.say(text, language=self.backend.language)
        response.pause(length=15)
        return str(response)

    def queue_exit(self, form: dict[str, str]) -> str:
        response = VoiceResponse()
        if form.get("QueueResult", "") in {"error", "system-error", "queue-full"}:
            response.say("Sorry, we cannot connect you right now. Please call again later.")
            response.hangup()
        return str(response)

    # -- agent leg -------------------------------------------------------------------------------------
    def agent_answered(self, call_id: str, agent_id: int, form: dict[str, str]) -> str:
        leg = form.get("CallSid", "") or "-"

        def produce(session: Session) -> str:
            self.bus.publish(AgentAnswered(call_id, agent_id=agent_id))
            if self.backend.settings.record_conversations:
                try:
                    self.backend.start_recording(call_id)
                except Exception:  # the conversation matters more than its recording
                    log.exception("call %s: starting the recording failed", call_id)
            return str(VoiceResponse())

        return self.once(call_id, f"agent-answered-{agent_id}-{leg}", produce)

    def agent_result(self, call_id: str, agent_id: int, form: dict[str, str]) -> str:
        status = form.get("DialCallStatus", "")
        leg = form.get("DialCallSid", "") or status

        def produce(session: Session) -> str:
            response = VoiceResponse()
            if status in AGENT_MISSED:
                self.bus.publish(AgentNoAnswer(call_id, agent_id=agent_id))
                response.enqueue(self._queue_of(call_id), wait_url=self.backend.urls.of("wait"),
                                 wait_url_method="POST", action=self.backend.urls.of("queue-exit"), method="POST")
                return str(response)
            # The agent's leg ended and the caller is still on the line: whatever the platform does
            # next (the post-call survey) becomes this answer; otherwise the call ends.
            row = session.scalar(select(BackendCall).where(BackendCall.backend == BACKEND,
                                                           BackendCall.call_id == call_id))
            if row is None:
                response.hangup()
                return str(response)
            return self._after_ivr(session, row, CallHungUp(call_id, by="agent", cause="agent hung up"))

        return self.once(call_id, f"agent-result-{agent_id}-{leg}", produce)

    # -- callbacks (agent first, then the customer) -------------------------------------------------------
    def callback_agent(self, call_id: str, agent_id: int, leg: str, form: dict[str, str]) -> str:
        """The agent answered the callback leg (Twilio fetches the call's ``Url``): ``AgentAnswered``; the
        TwiML prepared by ``call_back`` then dials the customer while the agent hears the ringback."""
        with self.sessions() as session:
            prepared = session.scalar(select(WebhookResponse.body).where(
                WebhookResponse.backend == BACKEND, WebhookResponse.ref == leg, WebhookResponse.step == CALLBACK_TWIML))

        def produce(session: Session) -> str:
            if not prepared:
                log.warning("call %s: callback leg %s has nothing prepared to dial; hanging up", call_id, leg)
                response = VoiceResponse()
                response.hangup()
                return str(response)
            self.bus.publish(AgentAnswered(call_id, agent_id=agent_id))
            return prepared

        return self.once(leg, "callback-agent", produce)

    def callback_answered(self, call_id: str, agent_id: int, leg: str, form: dict[str, str]) -> str:
        """``<Number statusCallbackEvent="answered">``: the customer picked up. Their leg (``CallSid``, a child
        of the agent's) becomes the call's current leg (``hangup``, recordings), then ``CallbackAnswered``."""
        customer = form.get("CallSid", "")
        if form.get("CallStatus", "in-progress") not in {"in-progress", "answered"}:
            return str(VoiceResponse())

        def produce(session: Session) -> str:
            if customer and self._row(session, customer) is None:
                with session_scope(self.sessions) as own:
                    own.add(BackendCall(backend=BACKEND, ref=customer, call_id=call_id))
                    own.add(WebhookResponse(backend=BACKEND, ref=customer, step=CALLBACK_CUSTOMER, body=leg))
            self._callback_connected(call_id, agent_id, leg)
            return str(VoiceResponse())

        return self.once(leg, "callback-answered", produce)

    def callback_result(self, call_id: str, agent_id: int, leg: str, form: dict[str, str]) -> str:
        """``<Dial action>`` of the callback's agent leg: the customer leg is over. ``completed`` (they had
        answered) → the conversation ended: ``CallHungUp`` (by the agent when the agent's own leg is
        ``completed``, else by the customer, or ``platform`` when we ended it); anything else →
        ``CallbackUnanswered`` and the agent's leg is ended with a short explanation."""
        status = form.get("DialCallStatus", "")

        def produce(session: Session) -> str:
            response = VoiceResponse()
            if status in {"completed", "answered"}:
                # Normally the answered callback came first; if it was lost, this is proof enough.
                self._callback_connected(call_id, agent_id, leg)
                by = "agent" if form.get("CallStatus", "") == "completed" else "caller"
                if self._platform_ended(session, form.get("CallSid", ""), form.get("DialCallSid", "")):
                    by = "platform"
                if not (by == "caller" and self._moved(session, leg)):
                    self._callback_over(call_id, leg, by, status)
            else:
                reason = CALLBACK_REASONS.get(status, "failed")
                if form.get("CallStatus", "") == "completed" or self._platform_ended(session, form.get("CallSid", "")):
                    # The agent's own leg is over (their hang-up, or ours for the console): they ended the
                    # attempt while the customer rang, whatever the Dial says of the customer's leg.
                    reason = AGENT_ENDED
                self._callback_unanswered(call_id, agent_id, leg, reason)
                response.say("The customer could not be reached.", language=self.backend.language)
            response.hangup()
            return str(response)

        return self.once(leg, "callback-result", produce)

    def callback_status(self, call_id: str, agent_id: int, leg: str, form: dict[str, str]) -> str:
        """The agent leg's status callback (``completed`` event). Never answered (no-answer, busy, failed,
        canceled) → ``AgentNoAnswer``. Ended while connected → the conversation is over, reported once
        together with the ``<Dial action>`` (whichever Twilio sends first)."""
        status = form.get("CallStatus", "")
        if status not in FINAL_STATUSES:
            return str(VoiceResponse())

        def produce(session: Session) -> str:
            if status in AGENT_MISSED:
                self.bus.publish(AgentNoAnswer(call_id, agent_id=agent_id))
            elif self._answered(session, leg, "callback-connected"):
                if not self._moved(session, leg):
                    by = "platform" if self._platform_ended(session, form.get("CallSid", "")) else "agent"
                    self._callback_over(call_id, leg, by, status)
            elif self._answered(session, leg, "callback-agent") and self._platform_ended(
                session, form.get("CallSid", "")
            ):
                # Answered (its Url was fetched), never connected, and we completed it (the console's
                # hang-up while the customer rang): the attempt is over even before the <Dial action>
                # arrives, which then publishes nothing more (one CallbackUnanswered per leg). Without our
                # hang-up the <Dial action> decides (an answered callback may have lost its status call).
                self._callback_unanswered(call_id, agent_id, leg, AGENT_ENDED)
            return str(VoiceResponse())

        return self.once(leg, "callback-status", produce)

    def _callback_connected(self, call_id: str, agent_id: int, leg: str) -> None:
        def produce(session: Session) -> str:
            self.bus.publish(CallbackAnswered(call_id, agent_id=agent_id))
            if self.backend.settings.record_conversations:
                try:
                    self.backend.start_recording(call_id)
                except Exception:  # the conversation matters more than its recording
                    log.exception("call %s: starting the recording failed", call_id)
            return "connected"

        self.once(leg, "callback-connected", produce)

    def _callback_unanswered(self, call_id: str, agent_id: int, leg: str, reason: str) -> None:
        def produce(session: Session) -> str:
            log.info("call %s: callback not answered (%s)", call_id, reason)
            self.bus.publish(CallbackUnanswered(call_id, agent_id=agent_id, reason=reason))
            return reason

        self.once(leg, "callback-unanswered", produce)

    def _callback_over(self, call_id: str, leg: str, by: str, cause: str) -> None:
        def produce(session: Session) -> str:
            self.bus.publish(CallHungUp(call_id, by=by, cause=cause))
            return by

        self.once(leg, "callback-hungup", produce)

    def _answered(self, session: Session, ref: str, step: str) -> bool:
        return bool(session.scalar(select(WebhookResponse.body).where(
            WebhookResponse.backend == BACKEND, WebhookResponse.ref == ref, WebhookResponse.step == step)))

    def _moved(self, session: Session, leg: str) -> bool:
        """Whether the platform moved this callback's customer on (a transfer): the first agent's
        ``<Dial>`` then ends without ending the call, which goes on as the customer's leg."""
        customers = select(WebhookResponse.ref).where(
            WebhookResponse.backend == BACKEND, WebhookResponse.step == CALLBACK_CUSTOMER, WebhookResponse.body == leg)
        return session.scalar(select(WebhookResponse.id).where(
            WebhookResponse.backend == BACKEND, WebhookResponse.step == LEG_MOVED,
            WebhookResponse.ref.in_(customers)).limit(1)) is not None

    def _platform_ended(self, session: Session, *sids: str) -> bool:
        refs = [sid for sid in sids if sid]
        return bool(refs) and session.scalar(select(WebhookResponse.id).where(
            WebhookResponse.backend == BACKEND, WebhookResponse.ref.in_(refs),
            WebhookResponse.step == PLATFORM_HANGUP).limit(1)) is not None

    def _wait_first_answer(self, session: Session, sid: str) -> BackendCall:
        """A callback that overtook the answer to the incoming-call webhook (another worker is still
        answering it): wait for that answer rather than mistake the call for one past its IVR."""
        deadline = time.monotonic() + self.claim_wait_seconds
        while time.monotonic() < deadline:
            time.sleep(0.02)
            session.expire_all()
            row = self._row(session, sid)
            if row is not None and row.webhook_seq > 0:
                return row
        abort(503)

    def _after_ivr(self, session: Session, row: BackendCall, event: object) -> str:
        """Publish in this thread; the action performed for the call (if any) is the answer."""
        with self.backend.capture(row.call_id) as capture:
            self.bus.publish(event)
        action = capture.close()
        if action is None:
            response = VoiceResponse()
            call = session.get(Call, row.call_id)
            if call is not None and call.state == "queued":
                # An announcement while waiting (position, callback offer) is over: back to the queue.
                response.enqueue(self._queue_of(row.call_id), wait_url=self.backend.urls.of("wait"),
                                 wait_url_method="POST", action=self.backend.urls.of("queue-exit"), method="POST")
            else:
                response.hangup()
            return str(response)
        row.webhook_seq += 1
        return self.backend.render(action, gather_url=self.backend.urls.of(f"gather/{row.webhook_seq}"))

    def _queue_of(self, call_id: str) -> str:
        with self.sessions() as session:
            name = session.scalar(select(Queue.name).join(Call, Call.queue_id == Queue.id).where(Call.id == call_id))
        return name or "general"

    # -- call and recording status -----------------------------------------------------------------------
    def status(self, form: dict[str, str]) -> str:
        sid = form.get("CallSid", "")
        status = form.get("CallStatus", "")
        if status not in FINAL_STATUSES:
            return str(VoiceResponse())

        def produce(session: Session) -> str:
            row = self._row(session, sid)
            platform = session.scalar(select(WebhookResponse.id).where(
                WebhookResponse.backend == BACKEND, WebhookResponse.ref == sid,
                WebhookResponse.step == PLATFORM_HANGUP)) is not None
            if row is not None:
                self.bus.publish(CallHungUp(row.call_id, by="platform" if platform else "caller", cause=status))
            return str(VoiceResponse())

        return self.once(sid, FINAL_STATUS, produce)

    def recording(self, form: dict[str, str]) -> str:
        sid = form.get("CallSid", "")
        recording_sid = form.get("RecordingSid", "")
        url = form.get("RecordingUrl", "")
        if form.get("RecordingStatus", "completed") != "completed" or not (recording_sid and url):
            return str(VoiceResponse())

        def produce(session: Session) -> str:
            row = self._row(session, sid)
            call_id = row.call_id if row is not None else ""
            if not call_id:
                log.warning("recording %s for an unknown call", recording_sid)
                return str(VoiceResponse())
            # Download off the request path: Twilio waits at most 15 s for this answer.
            thread = threading.Thread(target=self._download, args=(sid, call_id, dict(form)), daemon=True,
                                      name=f"twilio-recording-{recording_sid}")
            self._downloads = [t for t in self._downloads if t.is_alive()]
            self._downloads.append(thread)
            thread.start()
            return str(VoiceResponse())

        return self.once(sid, f"recording-{recording_sid}", produce)

    def _download(self, sid: str, call_id: str, form: dict[str, str]) -> None:
        from recordings import jobs
        from recordings.storage import recording_path, sha256_of

        recording_sid = form["RecordingSid"]
        try:
            audio = self.fetch(form["RecordingUrl"] + ".wav",
                               (self.backend.settings.account_sid, self.backend.settings.auth_token))
            path = recording_path(self.recordings_dir, call_id, "conversation")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(audio)
            with session_scope(self.sessions) as session:
                recording = Recording(call_id=call_id, kind="conversation", path=str(path), sha256=sha256_of(path),
                                      channels=_int(form.get("RecordingChannels"), 1),
                                      duration_seconds=float(_int(form.get("RecordingDuration"))))
                session.add(recording)
                session.flush()
                jobs.enqueue(session, recording)
        except Exception:
            log.exception("downloading recording %s of call %s failed", recording_sid, call_id)
            self._release(sid, f"recording-{recording_sid}")  # a repeated callback may try again

    def wait_for_downloads(self, timeout: float = 10.0) -> None:
        for thread in list(self._downloads):
            thread.join(timeout)

    def drain(self) -> None:
        """Wait for the work events set off after their webhooks answered (tests, shutdown)."""
        self._bus_workers.shutdown(wait=True)
        self._bus_workers = ThreadPoolExecutor(max_workers=self._bus_worker_count, thread_name_prefix="twilio-bus")


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(float(value)) if value not in (None, "") else default
    except ValueError:
        return default


def _confidence(form: dict[str, str]) -> float:
    try:
        return min(1.0, max(0.0, float(form.get("Confidence") or 0.0)))
    except ValueError:
        return 0.0


def twilio_blueprint(hooks: TwilioWebhooks) -> Blueprint:
    bp = Blueprint("twilio", __name__, url_prefix="/twilio")

    @bp.before_request
    def check_signature() -> Any:
        if request.endpoint == "twilio.prompt":
            return None  # public prompt audio, fetched by <Play>
        if not hooks.signature_ok():
            log.warning("Twilio webhook %s refused: bad or missing X-Twilio-Signature", request.path)
            return Response("invalid signature", status=403, mimetype="text/plain")
        return None

    def form() -> dict[str, str]:
        return request.form.to_dict()

    @bp.post("/voice")
    def voice() -> Response:
        return _twiml(hooks.voice(form()))

    @bp.post("/gather/<int:seq>")
    def gather(seq: int) -> Response:
        return _twiml(hooks.gather(seq, form()))

    @bp.post("/wait")
    def wait() -> Response:
        return _twiml(hooks.wait(form()))

    @bp.post("/queue-exit")
    def queue_exit() -> Response:
        return _twiml(hooks.queue_exit(form()))

    def call_and_agent() -> tuple[str, int]:
        call_id = request.args.get("call", "")
        agent = request.args.get("agent", "")
        if not call_id or not agent.isdigit():
            abort(400, "call and agent are required")
        return call_id, int(agent)

    @bp.post("/agent-answered")
    def agent_answered() -> Response:
        call_id, agent_id = call_and_agent()
        return _twiml(hooks.agent_answered(call_id, agent_id, form()))

    @bp.post("/agent-result")
    def agent_result() -> Response:
        call_id, agent_id = call_and_agent()
        return _twiml(hooks.agent_result(call_id, agent_id, form()))

    def callback_leg() -> tuple[str, int, str]:
        call_id, agent_id = call_and_agent()
        leg = request.args.get("leg", "")
        if not (len(leg) == 16 and all(c in "0123456789abcdef" for c in leg)):
            abort(400, "leg is required")
        return call_id, agent_id, leg

    @bp.post("/callback-agent")
    def callback_agent() -> Response:
        return _twiml(hooks.callback_agent(*callback_leg(), form()))

    @bp.post("/callback-answered")
    def callback_answered() -> Response:
        return _twiml(hooks.callback_answered(*callback_leg(), form()))

    @bp.post("/callback-result")
    def callback_result() -> Response:
        return _twiml(hooks.callback_result(*callback_leg(), form()))

    @bp.post("/callback-status")
    def callback_status() -> Response:
        return _twiml(hooks.callback_status(*callback_leg(), form()))

    @bp.post("/status")
    def status() -> Response:
        return _twiml(hooks.status(form()))

    @bp.post("/recording")
    def recording() -> Response:
        return _twiml(hooks.recording(form()))

    @bp.get("/prompts/<prompt_id>.wav")
    def prompt(prompt_id: str) -> Any:
        if hooks.prompts_dir is None:
            abort(404)
        return send_from_directory(hooks.prompts_dir, f"{prompt_id}.wav", mimetype="audio/wav")

    return bp


def make_webhooks(platform: Any, **options: Any) -> TwilioWebhooks:
    """Webhooks for a platform built with the Twilio backend (``build_platform(settings, "twilio")``)."""
    backend = platform.backend
    if not isinstance(backend, TwilioBackend):
        raise ValueError(f"the Twilio webhooks need the twilio backend, this platform runs {backend.name!r}")
    settings = platform.settings
    options.setdefault("prompts_dir", backend.prompts_dir)
    return TwilioWebhooks(backend, platform.bus, platform.ivr, platform.session_factory,
                          auth_token=settings.twilio.auth_token, public_base_url=settings.twilio.public_base_url,
                          recordings_dir=settings.recordings.directory, **options)


def init_twilio(app: Flask, platform: Any, **options: Any) -> TwilioWebhooks:
    """Register ``/twilio/`` on an existing app (the console): webhooks carry Twilio's signature, not
    a CSRF token, so the blueprint is exempt from CSRF."""
    hooks = make_webhooks(platform, **options)
    bp = twilio_blueprint(hooks)
    app.register_blueprint(bp)
    csrf = app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(bp)
    app.extensions["twilio_webhooks"] = hooks
    return hooks


def create_twilio_app(platform: Any, **options: Any) -> Flask:
    """A Flask app serving only the Twilio webhooks (e.g. a separate worker pool behind the proxy)."""
    app = Flask(__name__)
    init_twilio(app, platform, **options)
    return app
