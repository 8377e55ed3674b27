"""Callback dialling on the Twilio backend (agent first, then the customer), offline.

No Twilio cloud can be reached. The REST call that rings the agent is captured through the twilio
library's pluggable HTTP client (documented ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` with
``To``, ``From``, ``Url``, ``Method``, ``Timeout``, ``StatusCallback``, ``StatusCallbackEvent``); Twilio's
side of the call is played by posting the documented webhooks, signed with ``X-Twilio-Signature``
exactly as Twilio signs them: the call's ``Url`` fetched when the agent answers, the ``<Number
statusCallbackEvent="answered">`` status callback (``CallSid`` of the customer's child leg,
``ParentCallSid``), the ``<Dial action>`` request (``DialCallStatus`` completed / busy / no-answer /
failed / canceled, ``DialCallSid``, ``DialCallDuration``) and the call status callback (``CallStatus``).
Each test checks the events on the platform's real ``EventBus``, the REST form fields and the TwiML.
"""

from __future__ import annotations

import json
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update
from twilio.http.response import Response as TwilioResponse

from callcentre.bootstrap import Platform, build_platform, prompts_dir
from callcentre.db.models import BackendCall, Call
from callcentre.db.session import make_engine, make_session_factory
from callcentre.demo_data import demo_customer
from callcentre.domain.events import (
    AgentAnswered,
    AgentNoAnswer,
    CallbackAnswered,
    CallbackUnanswered,
    CallHungUp,
)
from callcentre.settings import Settings
from telephony.base import AgentEndpoint, can_call_back
from telephony.twilio import TwilioBackend
from telephony.twilio_webhooks import create_twilio_app
from tests.twilio_support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    PUBLIC,
    CapturingHttpClient,
    call_params,
    post_signed,
    query_of,
    twiml,
)

FROM = "+15550001000"
NUMBER = "+15550107777"
AGENT_LEG = "CA" + "ab" * 16
CUSTOMER_LEG = "CA" + "cd" * 16
ORIGINAL = "CA" + "0e" * 16


def wait_for(condition: Callable[[], Any], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


class CallsHttpClient(CapturingHttpClient):
    """The capturing client, answering a documented call creation (``POST …/Calls.json``) with a new
    call resource (``sid``, ``status: queued``) as Twilio does."""

    def request(self, method: str, uri: str, params: dict[str, object] | None = None,
                data: dict[str, object] | None = None, headers: dict[str, str] | None = None,
                auth: tuple[str, str] | None = None, timeout: float | None = None,
                allow_redirects: bool = False) -> TwilioResponse:
        response = super().request(method, uri, params, data, headers, auth, timeout, allow_redirects)
        if method == "POST" and uri.endswith(f"/Accounts/{ACCOUNT_SID}/Calls.json"):
            return TwilioResponse(201, json.dumps({"sid": AGENT_LEG, "status": "queued", "to": data and data["To"]}))
        return response


class Worker:
    KINDS = (AgentAnswered, AgentNoAnswer, CallbackAnswered, CallbackUnanswered, CallHungUp)

    def __init__(self, settings: Settings) -> None:
        self.http = CallsHttpClient()
        self.engine = make_engine(settings.database.url)
        self.backend = TwilioBackend(settings.twilio, make_session_factory(self.engine),
                                     prompts_dir=prompts_dir(settings), http_client=self.http)
        self.platform: Platform = build_platform(settings, self.backend)
        self.platform.start()
        self.app: Flask = create_twilio_app(self.platform)
        self.client = self.app.test_client()
        self.events: list[Any] = []
        for kind in self.KINDS:
            self.platform.bus.subscribe(kind, self.events.append)

    def summary(self) -> list[tuple[Any, ...]]:
        return [(type(e).__name__, getattr(e, "agent_id", None), getattr(e, "reason", None) or getattr(e, "by", None))
                for e in self.events]

    def close(self) -> None:
        self.app.extensions["twilio_webhooks"].drain()
        self.platform.stop()
        self.engine.dispose()


@pytest.fixture
def worker(demo_settings: Settings) -> Iterator[Worker]:
    settings = demo_settings.replace("twilio", account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                                     public_base_url=PUBLIC, from_number=FROM)
    w = Worker(settings)
    yield w
    w.close()


def original_call(worker: Worker) -> str:
    """The caller's first call: IVR, queued, then they hang up (status callback ``completed``)."""
    phone = demo_customer(1)["phone"]
    post_signed(worker.client, "/twilio/voice", call_params(ORIGINAL, phone))
    post_signed(worker.client, "/twilio/gather/1", {**call_params(ORIGINAL, phone, status="in-progress"),
                                                     "Digits": "1"})
    worker.app.extensions["twilio_webhooks"].drain()
    post_signed(worker.client, "/twilio/status", {**call_params(ORIGINAL, phone, status="completed"),
                                                   "CallDuration": "30"})
    with worker.platform.session_factory() as session:
        row = session.scalar(select(BackendCall).where(BackendCall.ref == ORIGINAL))
        assert row is not None
        call = session.get(Call, row.call_id)
        assert call is not None and call.state == "ended"
        call_id = row.call_id
    worker.events.clear()
    return call_id


def agent_leg_params(status: str) -> dict[str, str]:
    """Documented parameters of a request about a REST-created (``outbound-api``) call to the agent."""
    return {"AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "CallSid": AGENT_LEG, "CallStatus": status,
            "Direction": "outbound-api", "From": FROM, "To": "client:agent07", "Caller": FROM,
            "Called": "client:agent07"}


def start_callback(worker: Worker, call_id: str) -> tuple[dict[str, Any], str]:
    worker.backend.call_back(call_id, NUMBER, AgentEndpoint(7, "client:agent07"), ring_seconds=15,
                             customer_ring_seconds=25)
    created = worker.http.posted(f"/Accounts/{ACCOUNT_SID}/Calls.json")
    assert len(created) == 1
    data = created[0]["data"]
    return data, "?" + data["Url"].split("?", 1)[1]


def agent_answers(worker: Worker, query: str) -> ET.Element:
    path = "/twilio/callback-agent" + query
    first = post_signed(worker.client, path, agent_leg_params("in-progress"))
    again = post_signed(worker.client, path, agent_leg_params("in-progress"))
    assert first.get_data() == again.get_data(), "a retried webhook gets the same TwiML"
    return twiml(first)


def customer_answers(worker: Worker, query: str) -> None:
    params = {"AccountSid": ACCOUNT_SID, "CallSid": CUSTOMER_LEG, "ParentCallSid": AGENT_LEG,
              "CallStatus": "in-progress", "Direction": "outbound-dial", "From": FROM, "To": NUMBER,
              "CallbackSource": "call-progress-events", "SequenceNumber": "0", "Timestamp": "Sun, 22 Nov 2026"}
    for _ in range(2):
        assert post_signed(worker.client, "/twilio/callback-answered" + query, params).status_code == 200


def dial_result(worker: Worker, query: str, dial_status: str, *, agent_status: str = "in-progress",
                duration: str = "0") -> ET.Element:
    params = {**agent_leg_params(agent_status), "DialCallStatus": dial_status, "DialCallSid": CUSTOMER_LEG,
              "DialCallDuration": duration, "DialBridged": "true" if dial_status == "completed" else "false"}
    first = post_signed(worker.client, "/twilio/callback-result" + query, params)
    again = post_signed(worker.client, "/twilio/callback-result" + query, params)
    assert first.get_data() == again.get_data()
    return twiml(first)


def agent_leg_status(worker: Worker, query: str, status: str) -> None:
    params = {**agent_leg_params(status), "CallDuration": "0", "Timestamp": "Sun, 22 Nov 2026"}
    for _ in range(2):
        assert post_signed(worker.client, "/twilio/callback-status" + query, params).status_code == 200


def test_answered_callback_then_customer_hangs_up(worker: Worker, caplog: pytest.LogCaptureFixture) -> None:
    """REST call creation to the agent (``To=client:agent07``, ``From``, ``Url``, ``Timeout``=ring,
    ``StatusCallback`` with ``StatusCallbackEvent=completed``); the ``Url`` webhook → ``AgentAnswered`` and
    ``<Dial timeout=customer ring callerId=From action=…><Number statusCallbackEvent="answered">number``;
    the Number's ``answered`` callback → ``CallbackAnswered`` and a dual-channel recording of the
    customer's leg; the ``<Dial action>`` with ``DialCallStatus=completed`` while the agent's leg is
    still ``in-progress`` (the customer hung up) → ``<Hangup/>`` and one ``CallHungUp(by="caller")``;
    the agent leg's final status then adds nothing. Every webhook is posted twice (Twilio's retry)
    and acts once. The number appears only inside the TwiML, never in a URL or a log record."""
    caplog.set_level(logging.DEBUG)
    call_id = original_call(worker)
    assert can_call_back(worker.backend)
    data, query = start_callback(worker, call_id)
    assert {k: data[k] for k in ("To", "From", "Method", "Timeout", "StatusCallbackMethod")} == {
        "To": "client:agent07", "From": FROM, "Method": "POST", "Timeout": 15, "StatusCallbackMethod": "POST"}
    assert data["StatusCallbackEvent"] == ["completed"]
    assert data["Url"].startswith(f"{PUBLIC}/twilio/callback-agent?")
    assert data["StatusCallback"] == f"{PUBLIC}/twilio/callback-status{query}"
    leg = query_of(data["Url"])
    assert leg["call"] == call_id and leg["agent"] == "7" and len(leg["leg"]) == 16
    assert NUMBER not in json.dumps(data) and NUMBER[1:] not in json.dumps(data)

    root = agent_answers(worker, query)
    dial = root.find("Dial")
    assert dial is not None and [c.tag for c in root] == ["Dial"]
    assert dial.get("timeout") == "25" and dial.get("callerId") == FROM and dial.get("method") == "POST"
    assert dial.get("action") == f"{PUBLIC}/twilio/callback-result{query}"
    number = dial.find("Number")
    assert number is not None and number.text == NUMBER
    assert number.get("statusCallbackEvent") == "answered"
    assert number.get("statusCallback") == f"{PUBLIC}/twilio/callback-answered{query}"
    assert worker.summary() == [("AgentAnswered", 7, None)]

    customer_answers(worker, query)
    assert worker.summary() == [("AgentAnswered", 7, None), ("CallbackAnswered", 7, None)]
    recordings = worker.http.posted("/Recordings.json")
    assert [r["path"] for r in recordings] == [
        f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{CUSTOMER_LEG}/Recordings.json"]
    assert recordings[0]["data"]["RecordingChannels"] == "dual"

    root = dial_result(worker, query, "completed", duration="42")
    assert [c.tag for c in root] == ["Hangup"]
    agent_leg_status(worker, query, "completed")
    worker.app.extensions["twilio_webhooks"].drain()
    assert worker.summary() == [("AgentAnswered", 7, None), ("CallbackAnswered", 7, None),
                                ("CallHungUp", None, "caller")]
    assert all(e.call_id == call_id for e in worker.events)
    assert not any(NUMBER in r.getMessage() or NUMBER[1:] in r.getMessage() for r in caplog.records)


def test_platform_hangs_up_a_connected_callback(worker: Worker) -> None:
    """After ``CallbackAnswered`` the customer's leg is the call's leg: ``hangup`` → documented REST
    ``POST /Calls/{customer CallSid}.json`` ``Status=completed``; the ``<Dial action>`` that follows
    → one ``CallHungUp(by="platform")``."""
    call_id = original_call(worker)
    _data, query = start_callback(worker, call_id)
    agent_answers(worker, query)
    customer_answers(worker, query)
    worker.backend.hangup(call_id)
    assert worker.http.posted(f"/Calls/{CUSTOMER_LEG}.json")[-1]["data"] == {"Status": "completed"}
    dial_result(worker, query, "completed", duration="12")
    assert worker.summary()[-1] == ("CallHungUp", None, "platform")
    assert len([e for e in worker.events if isinstance(e, CallHungUp)]) == 1


def test_connected_callback_passed_to_another_agent(worker: Worker) -> None:
    """A transfer's ``connect_agent`` on a connected callback goes to the customer's leg (documented REST
    ``POST /Calls/{customer CallSid}.json`` with ``Twiml`` ``<Dial><Client>``); the first agent's ``<Dial
    action>`` that follows (``DialCallStatus=completed``, their leg still ``in-progress``) and their leg's
    final status end that agent's leg (``<Hangup/>``) but not the call: no ``CallHungUp``; the second
    agent's ``answered`` callback → ``AgentAnswered``."""
    call_id = original_call(worker)
    _data, query = start_callback(worker, call_id)
    agent_answers(worker, query)
    customer_answers(worker, query)
    worker.backend.connect_agent(call_id, AgentEndpoint(9, "client:agent09"), ring_seconds=15)
    moved = ET.fromstring(worker.http.posted(f"/Calls/{CUSTOMER_LEG}.json")[-1]["data"]["Twiml"])
    client = moved.find("Dial/Client")
    assert client is not None and client.text == "agent09"
    root = dial_result(worker, query, "completed", duration="40")
    assert [c.tag for c in root] == ["Hangup"]
    agent_leg_status(worker, query, "completed")
    answered = {"CallSid": "CA" + "9f" * 16, "ParentCallSid": CUSTOMER_LEG, "CallStatus": "in-progress",
                "AccountSid": ACCOUNT_SID}
    assert post_signed(worker.client, f"/twilio/agent-answered?call={call_id}&agent=9", answered).status_code == 200
    assert worker.summary() == [("AgentAnswered", 7, None), ("CallbackAnswered", 7, None), ("AgentAnswered", 9, None)]


@pytest.mark.parametrize("order", ["status-first", "dial-action-first"])
def test_agent_hangs_up_after_connection(worker: Worker, order: str) -> None:
    """The agent ends the conversation: the agent leg's status callback ``CallStatus=completed`` and the
    ``<Dial action>`` (``CallStatus=completed``, ``DialCallStatus=completed``) may come in either order;
    exactly one ``CallHungUp(by="agent")``. Without the ``answered`` callback (lost), a completed
    ``<Dial action>`` still reports ``CallbackAnswered`` first."""
    call_id = original_call(worker)
    _data, query = start_callback(worker, call_id)
    agent_answers(worker, query)
    if order == "status-first":
        customer_answers(worker, query)
        agent_leg_status(worker, query, "completed")
        dial_result(worker, query, "completed", agent_status="completed", duration="30")
    else:
        dial_result(worker, query, "completed", agent_status="completed", duration="30")
        agent_leg_status(worker, query, "completed")
    assert worker.summary() == [("AgentAnswered", 7, None), ("CallbackAnswered", 7, None),
                                ("CallHungUp", None, "agent")]


@pytest.mark.parametrize(("dial_status", "reason"), [
    ("busy", "busy"), ("no-answer", "no-answer"), ("failed", "failed"), ("canceled", "failed"),
])
def test_customer_does_not_answer(worker: Worker, dial_status: str, reason: str) -> None:
    """Documented ``DialCallStatus`` busy / no-answer / failed / canceled on the ``<Dial action>`` →
    ``CallbackUnanswered(reason)`` once, and TwiML that tells the agent and ends their leg
    (``<Say>`` + ``<Hangup/>``); the agent leg's final ``completed`` status adds nothing: never
    ``CallHungUp`` or ``CallbackAnswered``."""
    call_id = original_call(worker)
    _data, query = start_callback(worker, call_id)
    agent_answers(worker, query)
    root = dial_result(worker, query, dial_status)
    assert [c.tag for c in root] == ["Say", "Hangup"]
    agent_leg_status(worker, query, "completed")
    assert worker.summary() == [("AgentAnswered", 7, None), ("CallbackUnanswered", 7, reason)]
    assert not worker.http.posted("/Recordings.json")


@pytest.mark.parametrize("order", ["dial-action-first", "status-first", "status-only"])
def test_platform_hangup_while_the_customer_rings_ends_the_attempt(worker: Worker, order: str) -> None:
    """The console's hang-up while the customer rings → ``hangup(call_id)`` → documented REST ``POST
    /Calls/{agent CallSid}.json`` ``Status=completed`` (the agent's leg: the customer's is not the call's
    yet). Twilio then requests the ``<Dial action>`` (``CallStatus=completed``, the customer's leg
    ``DialCallStatus=canceled``, or ``no-answer``) and the agent leg's final status (``completed``), in
    either order, or only the latter → exactly one ``CallbackUnanswered("agent-ended")``, no
    ``CallHungUp``, no ``CallbackAnswered``."""
    call_id = original_call(worker)
    _data, query = start_callback(worker, call_id)
    agent_answers(worker, query)
    worker.backend.hangup(call_id)
    assert worker.http.posted(f"/Calls/{AGENT_LEG}.json")[-1]["data"] == {"Status": "completed"}
    if order == "dial-action-first":
        dial_result(worker, query, "canceled", agent_status="completed")
        agent_leg_status(worker, query, "completed")
    elif order == "status-first":
        agent_leg_status(worker, query, "completed")
        dial_result(worker, query, "no-answer", agent_status="completed")
    else:
        agent_leg_status(worker, query, "completed")
    assert worker.summary() == [("AgentAnswered", 7, None), ("CallbackUnanswered", 7, "agent-ended")]


def test_agent_hanging_up_their_phone_while_the_customer_rings(worker: Worker) -> None:
    """The agent hangs up on ringback (no REST request from us): the ``<Dial action>`` comes with the agent
    leg's ``CallStatus=completed`` → ``CallbackUnanswered("agent-ended")``, once."""
    call_id = original_call(worker)
    _data, query = start_callback(worker, call_id)
    agent_answers(worker, query)
    dial_result(worker, query, "canceled", agent_status="completed")
    agent_leg_status(worker, query, "completed")
    assert not worker.http.posted(f"/Calls/{AGENT_LEG}.json")
    assert worker.summary() == [("AgentAnswered", 7, None), ("CallbackUnanswered", 7, "agent-ended")]


@pytest.mark.parametrize("status", ["no-answer", "busy", "failed", "canceled"])
def test_agent_does_not_answer(worker: Worker, status: str) -> None:
    """The agent's leg never answers: Twilio never fetches its ``Url``; the documented status callback
    brings ``CallStatus`` no-answer / busy / failed / canceled → ``AgentNoAnswer`` once, nothing else."""
    call_id = original_call(worker)
    _data, query = start_callback(worker, call_id)
    agent_leg_status(worker, query, "ringing")  # not final: ignored
    agent_leg_status(worker, query, status)
    assert worker.summary() == [("AgentNoAnswer", 7, None)]


def test_callback_webhooks_check_signature_and_parameters(worker: Worker) -> None:
    """Every callback webhook needs a valid ``X-Twilio-Signature`` (403, nothing happens) and its ``call``,
    ``agent`` and ``leg`` parameters (400); a leg we never prepared is hung up, not dialled."""
    call_id = original_call(worker)
    _data, query = start_callback(worker, call_id)
    for path in ("callback-agent", "callback-answered", "callback-result", "callback-status"):
        params = {**agent_leg_params("in-progress"), "DialCallStatus": "completed"}
        assert post_signed(worker.client, f"/twilio/{path}{query}", params, signature="").status_code == 403
        assert post_signed(worker.client, f"/twilio/{path}{query}", params, token="not-the-token").status_code == 403
        assert post_signed(worker.client, f"/twilio/{path}?call={call_id}&agent=7", params).status_code == 400
        assert post_signed(worker.client, f"/twilio/{path}?call={call_id}&agent=x&leg=" + "0" * 16,
                           params).status_code == 400
    assert worker.events == []
    stray = twiml(post_signed(worker.client, f"/twilio/callback-agent?call={call_id}&agent=7&leg={'f' * 16}",
                              agent_leg_params("in-progress")))
    assert [c.tag for c in stray] == ["Hangup"] and worker.events == []


def test_call_back_refuses_what_it_cannot_dial(worker: Worker, demo_settings: Settings) -> None:
    """Clear errors before any REST request: an agent contact Twilio cannot ring, a number that is not
    a phone number (the message does not echo it), and no ``twilio.from_number`` (the caller id)."""
    call_id = original_call(worker)
    with pytest.raises(ValueError, match="client:LOGIN"):
        worker.backend.call_back(call_id, NUMBER, AgentEndpoint(1, "browser"), 10, 20)
    with pytest.raises(ValueError, match="not a diallable number") as refused:
        worker.backend.call_back(call_id, "+1555<Hangup/>", AgentEndpoint(1, "client:agent01"), 10, 20)
    assert "1555" not in str(refused.value)
    bare = TwilioBackend(demo_settings.twilio, worker.backend.sessions, http_client=worker.http)
    with pytest.raises(ValueError, match="from_number"):
        bare.call_back(call_id, NUMBER, AgentEndpoint(1, "client:agent01"), 10, 20)
    assert not worker.http.posted("/Calls.json")


@pytest.mark.parametrize("agent_free_first", [False, True])
def test_dispatcher_dials_an_ivr_callback_through_twilio(worker: Worker, agent_free_first: bool) -> None:
    """End to end with the real IVR (shipped flow), dispatcher and router on the demo database: a known
    caller chooses "call me back" (menu key 9, documented Gather ``Digits``), hears the goodbye
    (``<Play>`` + ``<Hangup/>``) and hangs up (status callback ``completed``). When a general agent
    becomes available the dispatcher reserves them and the backend rings them over REST (agent
    first: ``To`` the agent's ``client:`` identity, ``Timeout`` = ``routing.ring_seconds``); their
    answer (the ``Url`` webhook) dials the caller's own number for ``routing.callback_ring_seconds``;
    the customer's ``answered`` callback connects the call (answered, agent on the call) and the
    ``<Dial action>`` after the customer hangs up ends it as a callback, agent in wrap-up. With the agent
    free before the choice, the dispatcher asks for the callback while the caller still hears the
    goodbye: the agent's call is created only after that leg's final status callback."""
    from callcentre.db.models import Agent, QueueEntry
    from callcentre.domain.events import AgentStateChanged

    def make_available() -> None:
        with sessions() as s:
            s.execute(update(Agent).where(Agent.id == agent_id).values(state="available"))
            s.commit()
        worker.platform.bus.publish(AgentStateChanged(agent_id, "available"))

    sessions = worker.platform.session_factory
    with sessions() as s:
        s.execute(update(Agent).values(state="logged_out"))
        agent = s.scalar(select(Agent).where(Agent.login == "agent01"))
        assert agent is not None
        agent.sip_contact = "client:agent01"
        agent_id = agent.id
        s.commit()
    if agent_free_first:
        make_available()
    phone = demo_customer(1)["phone"]
    post_signed(worker.client, "/twilio/voice", call_params(ORIGINAL, phone))
    goodbye = twiml(post_signed(worker.client, "/twilio/gather/1",
                                {**call_params(ORIGINAL, phone, status="in-progress"), "Digits": "9"}))
    assert [c.tag for c in goodbye][-1] == "Hangup"
    worker.app.extensions["twilio_webhooks"].drain()
    time.sleep(0.2)
    assert not worker.http.posted("/Calls.json"), "nobody is rung while the caller hears the goodbye"
    post_signed(worker.client, "/twilio/status", {**call_params(ORIGINAL, phone, status="completed"),
                                                   "CallDuration": "20"})
    with sessions() as s:
        row = s.scalar(select(BackendCall).where(BackendCall.ref == ORIGINAL))
        assert row is not None
        call_id = row.call_id
        entry = s.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
        assert entry is not None and entry.callback_number == phone
    if not agent_free_first:
        assert entry.status == "waiting" and not worker.http.posted("/Calls.json")
        make_available()
    assert wait_for(lambda: worker.http.posted(f"/Accounts/{ACCOUNT_SID}/Calls.json"))
    (created,) = worker.http.posted(f"/Accounts/{ACCOUNT_SID}/Calls.json")
    assert created["data"]["To"] == "client:agent01" and created["data"]["From"] == FROM
    assert created["data"]["Timeout"] == round(worker.platform.settings.routing.ring_seconds)
    query = "?" + created["data"]["Url"].split("?", 1)[1]
    assert query_of(created["data"]["Url"])["call"] == call_id

    root = twiml(post_signed(worker.client, "/twilio/callback-agent" + query,
                             {**agent_leg_params("in-progress"), "To": "client:agent01"}))
    dial = root.find("Dial")
    routing = worker.platform.settings.routing
    assert dial is not None and dial.get("timeout") == str(round(routing.callback_ring_seconds))
    number = dial.find("Number")
    assert number is not None and number.text == phone
    customer_answers(worker, query)
    with sessions() as s:
        call = s.get(Call, call_id)
        assert call is not None and call.answered_at is not None
        assert s.get(Agent, agent_id).state == "on_call"  # type: ignore[union-attr]

    dial_result(worker, query, "completed", duration="95")
    with sessions() as s:
        call = s.get(Call, call_id)
        assert call is not None and call.outcome == "callback"
        assert s.get(Agent, agent_id).state == "wrap_up"  # type: ignore[union-attr]
        entry = s.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
        assert entry is not None and entry.status == "done"
    kinds = [name for name, _a, _x in worker.summary()]
    assert kinds[-3:] == ["AgentAnswered", "CallbackAnswered", "CallHungUp"]
