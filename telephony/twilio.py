"""Twilio backend: IVR actions as TwiML, call control through the REST API.

Twilio drives the call by webhooks (see :mod:`telephony.twilio_webhooks`). While a webhook is being
answered, the IVR's ``perform`` for that call is *captured* and becomes the webhook's TwiML; an
action performed outside a webhook (the router connecting an agent, a supervisor hanging up) is
pushed live with ``calls(sid).update(twiml=…)``.

* ``Gather`` → ``<Gather input="dtmf speech" action=/twilio/gather/<seq> actionOnEmptyResult="true">``
  with the prompts inside (callers may key ahead), ``hints`` from the speech phrases.
* ``Enqueue`` → prompts, then ``<Enqueue waitUrl=/twilio/wait action=/twilio/queue-exit>queue</Enqueue>``.
* ``Transfer`` → ``<Dial>number</Dial>``; ``Hangup``/``RequestCallback`` → prompts then ``<Hangup/>``.
* ``connect_agent`` → ``calls(caller).update`` with ``<Dial action=/twilio/agent-result>`` and
  ``<Client>``/``<Sip>``/``<Number>`` (``statusCallbackEvent="answered"`` → ``AgentAnswered``;
  ``DialCallStatus`` no-answer/busy/failed → ``AgentNoAnswer`` and the caller goes back in the queue).
* ``hangup`` → ``calls(sid).update(status="completed")``; ``start_recording`` →
  ``calls(sid).recordings.create(recordingChannels="dual", recordingStatusCallback=…)``.
* ``call_back`` (agent first) → ``calls.create(to=agent, from_=twilio.from_number, url=/twilio/callback-agent,
  timeout=ring, statusCallback=/twilio/callback-status)``; the agent answering fetches that URL, whose TwiML
  (prepared here and kept in ``webhook_responses``, so the number never travels in a URL) is
  ``<Dial timeout=customer ring action=/twilio/callback-result><Number statusCallbackEvent="answered">``.
  The webhooks turn the callbacks into ``AgentAnswered`` / ``AgentNoAnswer`` / ``CallbackAnswered`` /
  ``CallbackUnanswered`` / ``CallHungUp``.

Prompts play as ``<Play>`` of the recorded WAV when the platform has a public URL and the file
exists, else as ``<Say>`` of the prompt text.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from twilio.http import HttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import Dial, VoiceResponse

from callcentre.bus import EventBus
from callcentre.db.models import BackendCall, WebhookResponse
from callcentre.db.session import session_scope
from callcentre.domain.errors import CallCentreError
from callcentre.domain.events import AgentNoAnswer
from callcentre.settings import Settings, TwilioSettings
from ivr.actions import Action, Enqueue, Gather, Prompt, Transfer
from telephony.base import AgentEndpoint

log = logging.getLogger(__name__)

BACKEND = "twilio"
PLATFORM_HANGUP = "platform-hangup"
CALLBACK_TWIML = "callback-twiml"
"""``webhook_responses`` step holding the TwiML prepared for a callback's agent leg (keyed by the leg token)."""
CALLBACK_CUSTOMER = "callback-customer"
"""Marks a callback's customer leg (ref = its CallSid, body = the leg token of the agent's leg)."""
FINAL_STATUS = "status-final"
"""``webhook_responses`` step of a leg's final status callback (its body is set once ``CallHungUp`` is out)."""
CALLER_LEG_WAIT_SECONDS = 30.0
"""A callback due while the caller's own leg still hears the goodbye waits this long for it to end."""
LEG_MOVED = "leg-moved"
"""Marks a callback's customer leg the platform gave new TwiML (a transfer): leaving the first agent's
``<Dial>`` is then not the end of the call."""


class TwilioUnsupported(CallCentreError):
    """An operation Twilio's plain call model cannot do here (hold needs Conferences)."""

    def __init__(self, call_id: str, operation: str, why: str) -> None:
        super().__init__(f"call {call_id}: {operation} is not supported on Twilio: {why}")
        self.call_id = call_id
        self.operation = operation


@dataclass
class Capture:
    """The action the IVR performs for the call while its webhook is being answered."""

    call_id: str
    actions: list[Action] = field(default_factory=list)
    performed: threading.Event = field(default_factory=threading.Event)
    closed: bool = False
    """Set once the webhook has answered: later actions must go out over REST instead."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def offer(self, action: Action) -> bool:
        """Take the first action only: it answers this webhook. Whatever else is performed on the call
        meanwhile (the router's first queue announcement, set off by the same event) goes out over REST."""
        with self.lock:
            if self.closed or self.actions:
                return False
            self.actions.append(action)
            self.performed.set()
            return True

    def close(self) -> Action | None:
        with self.lock:
            self.closed = True
            return self.actions[-1] if self.actions else None


@dataclass(frozen=True)
class Urls:
    """Builds the absolute URLs Twilio will call back (they must match what signatures cover)."""

    base: str

    def of(self, path: str, **query: str) -> str:
        suffix = f"?{urlencode(query)}" if query else ""
        return f"{self.base.rstrip('/')}/twilio/{path}{suffix}"


def agent_noun(dial: Dial, contact: str, callback: str) -> None:
    """Add the noun that rings the agent: ``client:login``, ``sip:…`` or an E.164 number."""
    events = "answered"
    if contact.startswith("client:"):
        dial.client(contact[len("client:"):], status_callback_event=events, status_callback=callback,
                    status_callback_method="POST")
    elif contact.startswith(("sip:", "sips:")):
        dial.sip(contact, status_callback_event=events, status_callback=callback, status_callback_method="POST")
    elif contact.startswith("+") and contact[1:].isdigit():
        dial.number(contact, status_callback_event=events, status_callback=callback, status_callback_method="POST")
    else:
        raise ValueError(f"cannot ring agent contact {contact!r} on Twilio; use client:LOGIN, sip:URI or +E164")


def agent_address(contact: str) -> str:
    """The ``To`` of a REST-created call to an agent: ``client:login``, a SIP URI or an E.164 number."""
    if contact.startswith("client:") and len(contact) > len("client:"):
        return contact
    if contact.startswith(("sip:", "sips:")) or (contact.startswith("+") and contact[1:].isdigit()):
        return contact
    raise ValueError(f"cannot ring agent contact {contact!r} on Twilio; use client:LOGIN, sip:URI or +E164")


class TwilioBackend:
    name = BACKEND

    def __init__(self, settings: TwilioSettings, session_factory: sessionmaker[Session], *,
                 prompts_dir: Path | None = None, http_client: HttpClient | None = None,
                 language: str = "en-US") -> None:
        self.settings = settings
        self.sessions = session_factory
        self.urls = Urls(settings.public_base_url or "http://127.0.0.1")
        self.prompts_dir = prompts_dir
        self.language = language
        self.client = Client(settings.account_sid or None, settings.auth_token or None, http_client=http_client)
        self._bus: EventBus | None = None
        self._local = threading.local()
        self._prompt_files: dict[str, bool] = {}
        self.state_saver: Callable[[str], int] | None = None
        """Set by the webhooks: saves the IVR state for an action pushed outside a webhook and
        returns the number of its Gather (the next webhook's URL)."""

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, bus: EventBus) -> None:
        self._bus = bus

    def stop(self) -> None:
        """Nothing to release: Twilio holds the calls; webhooks stop when the web server stops."""

    # -- capture: perform() during a webhook becomes that webhook's TwiML -------------------------
    @contextmanager
    def capture(self, call_id: str, into: Capture | None = None) -> Iterator[Capture]:
        """While inside, ``perform`` for ``call_id`` in this thread is captured, not sent over REST."""
        previous = getattr(self._local, "capture", None)
        self._local.capture = into or Capture(call_id)
        try:
            yield self._local.capture
        finally:
            self._local.capture = previous

    # -- TelephonyBackend ------------------------------------------------------------------------
    def perform(self, call_id: str, action: Action) -> None:
        capture: Capture | None = getattr(self._local, "capture", None)
        if capture is not None and capture.call_id == call_id and capture.offer(action):
            return
        sid = self.call_sid(call_id)
        seq = self.state_saver(call_id) if self.state_saver is not None else 0
        twiml = self.render(action, gather_url=self.urls.of(f"gather/{seq}"))
        self._mark_if_moving_callback(sid)
        self.client.calls(sid).update(twiml=twiml)

    def connect_agent(self, call_id: str, agent: AgentEndpoint, ring_seconds: float) -> None:
        sid = self.call_sid(call_id)
        response = VoiceResponse()
        query = {"call": call_id, "agent": str(agent.agent_id)}
        dial = Dial(timeout=int(ring_seconds), action=self.urls.of("agent-result", **query), method="POST")
        agent_noun(dial, agent.contact, self.urls.of("agent-answered", **query))
        response.append(dial)
        self._mark_if_moving_callback(sid)
        self.client.calls(sid).update(twiml=str(response))

    def call_back(self, call_id: str, number: str, agent: AgentEndpoint, ring_seconds: float,
                  customer_ring_seconds: float) -> None:
        """Agent first: a new REST call to the agent; on answer its TwiML dials the customer.

        The agent leg is tracked as another ``backend_calls`` row of ``call_id`` (the original, ended
        call), so ``hangup`` and recordings reach it; once the customer answers, their leg is added
        and becomes the call's leg. The number is never logged and never put in a URL.
        """
        if not self.settings.from_number:
            raise ValueError("twilio.from_number must be set: it is the caller id of callback calls")
        if not number or not (number.lstrip("+").isdigit()):
            raise ValueError(f"call {call_id}: the callback number is not a diallable number")
        to = agent_address(agent.contact)
        caller_leg = self._caller_leg_still_up(call_id)
        if caller_leg is None:
            self._dial_callback(call_id, number, agent, to, ring_seconds, customer_ring_seconds)
            return
        # The caller chose the callback a moment ago and still hears the goodbye: ring the agent once
        # Twilio reported that leg's end (any worker may receive it), so its CallHungUp comes first.
        log.info("call %s: callback waits for the caller's own leg to end", call_id)

        def when_caller_gone() -> None:
            deadline = time.monotonic() + CALLER_LEG_WAIT_SECONDS
            while not self.marked(caller_leg, FINAL_STATUS) and time.monotonic() < deadline:
                time.sleep(0.05)
            try:
                self._dial_callback(call_id, number, agent, to, ring_seconds, customer_ring_seconds)
            except Exception as exc:  # its text may hold the number: the type only
                log.warning("call %s: the callback to agent %s could not start (%s)", call_id, agent.agent_id,
                            type(exc).__name__)
                if self._bus is not None:
                    self._bus.publish(AgentNoAnswer(call_id, agent_id=agent.agent_id))

        threading.Thread(target=when_caller_gone, name=f"callback-{call_id}", daemon=True).start()

    def _caller_leg_still_up(self, call_id: str) -> str | None:
        """The caller's own (first and only) leg, while Twilio has not reported its final status."""
        with self.sessions() as session:
            sids = list(session.scalars(select(BackendCall.ref).where(
                BackendCall.backend == BACKEND, BackendCall.call_id == call_id).limit(2)))
        if len(sids) != 1 or self.marked(sids[0], FINAL_STATUS):
            return None
        return sids[0]

    def _dial_callback(self, call_id: str, number: str, agent: AgentEndpoint, to: str, ring_seconds: float,
                       customer_ring_seconds: float) -> None:
        leg = secrets.token_hex(8)
        query = {"call": call_id, "agent": str(agent.agent_id), "leg": leg}
        response = VoiceResponse()
        dial = Dial(timeout=max(1, round(customer_ring_seconds)), action=self.urls.of("callback-result", **query),
                    method="POST", caller_id=self.settings.from_number)
        dial.number(number, status_callback_event="answered", status_callback_method="POST",
                    status_callback=self.urls.of("callback-answered", **query))
        response.append(dial)
        with session_scope(self.sessions) as session:
            session.add(WebhookResponse(backend=BACKEND, ref=leg, step=CALLBACK_TWIML, body=str(response)))
        call = self.client.calls.create(
            to=to, from_=self.settings.from_number, url=self.urls.of("callback-agent", **query), method="POST",
            timeout=max(1, round(ring_seconds)), status_callback=self.urls.of("callback-status", **query),
            status_callback_event=["completed"], status_callback_method="POST",
        )
        with session_scope(self.sessions) as session:
            session.add(BackendCall(backend=BACKEND, ref=str(call.sid), call_id=call_id))
        log.info("call %s: callback leg %s rings agent %s", call_id, call.sid, agent.agent_id)

    def hold(self, call_id: str, on: bool) -> None:
        raise TwilioUnsupported(call_id, "hold", "putting one party on hold needs a Twilio Conference")

    def hangup(self, call_id: str) -> None:
        """Complete the call's current leg. While a callback's customer rings that is the AGENT's leg
        (the customer's is not the call's yet): its ``<Dial>`` ends and the webhooks report
        ``CallbackUnanswered("agent-ended")`` (``twilio_webhooks``)."""
        sid = self.call_sid(call_id)
        self.mark_platform_hangup(call_id)
        self.client.calls(sid).update(status="completed")

    def start_recording(self, call_id: str) -> str:
        """Dual-channel recording (caller and agent apart); returns the RecordingSid."""
        sid = self.call_sid(call_id)
        recording = self.client.calls(sid).recordings.create(
            recording_channels="dual", recording_status_callback=self.urls.of("recording"),
            recording_status_callback_event=["completed"],
        )
        return str(recording.sid)

    # -- state -----------------------------------------------------------------------------------
    def call_sid(self, call_id: str) -> str:
        """The call's current leg: the newest one (a callback adds legs to the original call's id)."""
        with self.sessions() as session:
            row = session.scalar(select(BackendCall).where(BackendCall.backend == BACKEND,
                                                           BackendCall.call_id == call_id)
                                 .order_by(BackendCall.id.desc()).limit(1))
            if row is None:
                raise KeyError(f"no Twilio call for {call_id}")
            return row.ref

    def mark_platform_hangup(self, call_id: str) -> None:
        """Remember that we ended the call, so its status callback reports ``by="platform"``."""
        self.mark(self.call_sid(call_id), PLATFORM_HANGUP)

    def mark(self, sid: str, step: str, body: str = "1") -> None:
        """Remember a fact about a call leg (once) in ``webhook_responses``, where every worker sees it."""
        with session_scope(self.sessions) as session:
            exists = session.scalar(select(WebhookResponse.id).where(
                WebhookResponse.backend == BACKEND, WebhookResponse.ref == sid, WebhookResponse.step == step))
            if exists is None:
                session.add(WebhookResponse(backend=BACKEND, ref=sid, step=step, body=body))

    def marked(self, sid: str, step: str) -> str:
        with self.sessions() as session:
            return session.scalar(select(WebhookResponse.body).where(
                WebhookResponse.backend == BACKEND, WebhookResponse.ref == sid, WebhookResponse.step == step)) or ""

    def _mark_if_moving_callback(self, sid: str) -> None:
        if self.marked(sid, CALLBACK_CUSTOMER):
            self.mark(sid, LEG_MOVED)

    # -- TwiML -----------------------------------------------------------------------------------
    def _has_prompt_file(self, prompt_id: str) -> bool:
        if prompt_id not in self._prompt_files:
            exists = self.prompts_dir is not None and (self.prompts_dir / f"{prompt_id}.wav").is_file()
            self._prompt_files[prompt_id] = exists
        return self._prompt_files[prompt_id]

    def _add_prompts(self, verb: Any, prompts: tuple[Prompt, ...]) -> None:
        for prompt in prompts:
            if self.settings.public_base_url and self._has_prompt_file(prompt.id):
                verb.play(self.urls.of(f"prompts/{prompt.id}.wav"))
            else:
                verb.say(prompt.text, language=self.language)

    def render(self, action: Action, *, gather_url: str) -> str:
        response = VoiceResponse()
        if isinstance(action, Gather):
            options: dict[str, Any] = {
                "input": "dtmf speech" if action.speech_phrases else "dtmf",
                "action": gather_url, "method": "POST", "timeout": max(1, round(action.timeout_seconds)),
                "action_on_empty_result": True, "finish_on_key": action.terminator or "",
            }
            if action.max_digits == action.min_digits or not action.terminator:
                options["num_digits"] = action.max_digits
            if action.speech_phrases:
                options["hints"] = ", ".join(action.speech_phrases)
                options["speech_timeout"] = "auto"
                options["language"] = self.language
            gather = response.gather(**options)
            self._add_prompts(gather, action.prompts)
            return str(response)
        self._add_prompts(response, action.prompts)
        if isinstance(action, Enqueue):
            response.enqueue(action.queue, wait_url=self.urls.of("wait"), wait_url_method="POST",
                             action=self.urls.of("queue-exit"), method="POST")
        elif isinstance(action, Transfer):
            response.dial(action.number)
        else:
            response.hangup()
        return str(response)


def build_twilio_backend(settings: Settings) -> TwilioBackend:
    """Factory used by ``callcentre.bootstrap`` (``--backend twilio``): its own session factory on the
    platform database, because backends are built before the platform's."""
    from callcentre.bootstrap import prompts_dir
    from callcentre.db.session import make_engine, make_session_factory

    engine = make_engine(settings.database.url, echo=settings.database.echo)
    return TwilioBackend(settings.twilio, make_session_factory(engine), prompts_dir=prompts_dir(settings))


MediaFetcher = Callable[[str, tuple[str, str]], bytes]


def fetch_media(url: str, auth: tuple[str, str]) -> bytes:
    """Download a recording (``RecordingUrl`` + ``.wav``) with the account's credentials."""
    import requests

    response = requests.get(url, auth=auth, timeout=30)
    response.raise_for_status()
    return response.content
