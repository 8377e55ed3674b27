"""Twilio webhooks and REST calls, offline, against the real IVR and a real (SQLite) database.

No Twilio cloud can be reached: webhooks are posted with the parameters Twilio documents for each
callback, signed as Twilio signs them (``tests/twilio_support.py``); returned TwiML is parsed; REST
calls are captured through the twilio library's pluggable HTTP client. Each test names the
documented behaviour it reproduces.
"""

from __future__ import annotations

import threading
import wave
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from callcentre.bootstrap import Platform, build_platform, prompts_dir
from callcentre.db.models import BackendCall, Call, Recording, TranscriptionJob
from callcentre.db.session import make_engine, make_session_factory
from callcentre.demo_data import demo_customer
from callcentre.domain.events import AgentAnswered, AgentNoAnswer, CallArrived, CallHungUp, DigitsReceived
from callcentre.settings import Settings
from telephony.base import AgentEndpoint
from telephony.twilio import TwilioBackend, TwilioUnsupported
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


@pytest.fixture
def twilio_settings(demo_settings: Settings) -> Settings:
    return demo_settings.replace("twilio", account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, public_base_url=PUBLIC)


class Worker:
    """One web worker process: its own platform (bus, IvrService, backend), the shared database."""

    def __init__(self, settings: Settings) -> None:
        self.http = CapturingHttpClient()
        self.engine = make_engine(settings.database.url)
        backend = TwilioBackend(settings.twilio, make_session_factory(self.engine), prompts_dir=prompts_dir(settings),
                                http_client=self.http)
        self.platform: Platform = build_platform(settings, backend)
        self.backend = backend
        self.platform.start()
        self.app: Flask = create_twilio_app(self.platform)
        self.client = self.app.test_client()
        self.events: list[Any] = []
        for kind in (CallArrived, DigitsReceived, AgentAnswered, AgentNoAnswer, CallHungUp):
            self.platform.bus.subscribe(kind, self.events.append)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def close(self) -> None:
        self.app.extensions["twilio_webhooks"].drain()
        self.platform.stop()
        self.engine.dispose()


@pytest.fixture
def worker(twilio_settings: Settings) -> Iterator[Worker]:
    w = Worker(twilio_settings)
    yield w
    w.close()


def count(worker: Worker, model: Any) -> int:
    with worker.platform.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def call_of(worker: Worker, sid: str) -> Call:
    with worker.platform.session_factory() as session:
        row = session.scalar(select(BackendCall).where(BackendCall.ref == sid))
        assert row is not None
        call = session.get(Call, row.call_id)
        assert call is not None
        return call


def test_incoming_call_answers_first_ivr_step_as_gather(worker: Worker) -> None:
    """Documented incoming-call webhook (CallSid, From, To, CallStatus=ringing …) answered with TwiML:
    ``<Gather input="dtmf speech" action=… actionOnEmptyResult="true">`` holding the prompts (``<Play>``
    of the recorded WAV under the public URL), ``numDigits`` for a one-key menu, ``hints`` for speech."""
    root = twiml(post_signed(worker.client, "/twilio/voice", call_params("CA" + "a" * 32, demo_customer(1)["phone"])))
    gather = root.find("Gather")
    assert gather is not None and len(root) == 1
    assert gather.get("input") == "dtmf speech" and gather.get("numDigits") == "1"
    assert gather.get("action") == f"{PUBLIC}/twilio/gather/1" and gather.get("actionOnEmptyResult") == "true"
    assert "billing" in (gather.get("hints") or "")
    assert [p.text for p in gather.findall("Play")] == [f"{PUBLIC}/twilio/prompts/welcome.wav",
                                                        f"{PUBLIC}/twilio/prompts/main_menu.wav"]
    prompt = worker.client.get("/twilio/prompts/welcome.wav")
    assert prompt.status_code == 200 and prompt.data[:4] == b"RIFF"


@pytest.mark.parametrize("signature", ["", "bm90LWEtc2lnbmF0dXJl", "wrong-token"])
def test_bad_signature_is_refused_with_403_and_changes_nothing(worker: Worker, signature: str) -> None:
    """Documented ``X-Twilio-Signature`` check: missing, forged, or made with another auth token → 403;
    no call is created."""
    params = call_params("CA" + "b" * 32, "+15550109999")
    if signature == "wrong-token":
        response = post_signed(worker.client, "/twilio/voice", params, token="another-token")
    else:
        response = post_signed(worker.client, "/twilio/voice", params, signature=signature)
    assert response.status_code == 403
    assert count(worker, BackendCall) == 0 and not worker.of(CallArrived)


def test_tampered_parameter_breaks_the_signature(worker: Worker) -> None:
    """The signature covers every POST parameter: changing ``Digits`` after signing → 403."""
    sid = "CA" + "c" * 32
    post_signed(worker.client, "/twilio/voice", call_params(sid, demo_customer(1)["phone"]))
    params = {**call_params(sid, demo_customer(1)["phone"], status="in-progress"), "Digits": "1"}
    from tests.twilio_support import sign

    signature = sign(f"{PUBLIC}/twilio/gather/1", params)
    response = worker.client.post("/twilio/gather/1", data={**params, "Digits": "2"},
                                  headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403 and not worker.of(DigitsReceived)


def test_known_caller_journey_to_enqueue(worker: Worker) -> None:
    """Documented Gather callback (``Digits``) → next step; the queue step answers
    ``<Enqueue waitUrl=… action=…>queue</Enqueue>`` after the prompt."""
    sid = "CA" + "d" * 32
    post_signed(worker.client, "/twilio/voice", call_params(sid, demo_customer(1)["phone"]))
    root = twiml(post_signed(worker.client, "/twilio/gather/1",
                             {**call_params(sid, demo_customer(1)["phone"], status="in-progress"),
                              "Digits": "2", "FinishedOnKey": ""}))
    assert [child.tag for child in root] == ["Play", "Enqueue"]
    enqueue = root.find("Enqueue")
    assert enqueue is not None and enqueue.text == "technical"
    assert enqueue.get("waitUrl") == f"{PUBLIC}/twilio/wait"
    call = call_of(worker, sid)
    assert call.state == "queued" and call.backend == "twilio" and call.backend_ref == sid


def test_unknown_caller_with_account_and_speech(worker: Worker) -> None:
    """Account digits (``finishOnKey="#"``, no numDigits for variable length), PIN, then the reason
    spoken: documented ``SpeechResult`` + ``Confidence`` parameters."""
    spec = demo_customer(2)
    sid = "CA" + "e" * 32
    first = twiml(post_signed(worker.client, "/twilio/voice", call_params(sid, "+19995550000")))
    gather = first.find("Gather")
    assert gather is not None and gather.get("finishOnKey") == "#" and gather.get("numDigits") is None
    base = call_params(sid, "+19995550000", status="in-progress")
    pin = twiml(post_signed(worker.client, "/twilio/gather/1", {**base, "Digits": spec["account_number"]}))
    pin_gather = pin.find("Gather")
    assert pin_gather is not None and pin_gather.get("numDigits") == "4"
    menu = twiml(post_signed(worker.client, "/twilio/gather/2", {**base, "Digits": spec["pin"]}))
    menu_gather = menu.find("Gather")
    assert menu_gather is not None and menu_gather.get("action") == f"{PUBLIC}/twilio/gather/3"
    done = twiml(post_signed(worker.client, "/twilio/gather/3",
                             {**base, "SpeechResult": "billing", "Confidence": "0.92"}))
    enqueue = done.find("Enqueue")
    assert enqueue is not None and enqueue.text == "billing"
    call = call_of(worker, sid)
    assert call.reason == "billing" and not call.unidentified


def test_retries_get_the_same_twiml_and_no_double_side_effects(worker: Worker) -> None:
    """Twilio retries a webhook it got no answer to: the same CallSid+step returns identical TwiML,
    one call row, one ``CallArrived``, and a digit is counted once."""
    sid = "CA" + "f" * 32
    params = call_params(sid, "+19995550000")
    first = post_signed(worker.client, "/twilio/voice", params).get_data(as_text=True)
    again = post_signed(worker.client, "/twilio/voice", params).get_data(as_text=True)
    assert first == again and len(worker.of(CallArrived)) == 1 and twilio_calls(worker) == 1
    base = call_params(sid, "+19995550000", status="in-progress")
    bad1 = post_signed(worker.client, "/twilio/gather/1", {**base, "Digits": "12"}).get_data(as_text=True)
    bad1_retry = post_signed(worker.client, "/twilio/gather/1", {**base, "Digits": "12"}).get_data(as_text=True)
    assert bad1 == bad1_retry and len(worker.of(DigitsReceived)) == 1
    with worker.platform.session_factory() as session:
        row = session.scalar(select(BackendCall).where(BackendCall.ref == sid))
        assert row is not None and row.webhook_seq == 2 and row.ivr_state is not None
        assert row.ivr_state["attempts"] == 1, "the retried wrong input counted once"


def twilio_calls(worker: Worker) -> int:
    with worker.platform.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(Call).where(Call.backend == "twilio")) or 0)


def test_any_worker_continues_the_call(twilio_settings: Settings) -> None:
    """State between webhooks is in the database: the incoming-call webhook reaches worker A, the
    Gather callbacks reach worker B (another IvrService, nothing in memory) and the call completes."""
    a, b = Worker(twilio_settings), Worker(twilio_settings)
    try:
        spec = demo_customer(2)
        sid = "CA" + "1" * 32
        post_signed(a.client, "/twilio/voice", call_params(sid, "+19995550000"))
        base = call_params(sid, "+19995550000", status="in-progress")
        twiml(post_signed(b.client, "/twilio/gather/1", {**base, "Digits": spec["account_number"]}))
        twiml(post_signed(a.client, "/twilio/gather/2", {**base, "Digits": spec["pin"]}))
        done = twiml(post_signed(b.client, "/twilio/gather/3", {**base, "Digits": "3"}))
        enqueue = done.find("Enqueue")
        assert enqueue is not None and enqueue.text == "sales"
        call = call_of(a, sid)
        assert call.state == "queued" and call.reason == "sales"
    finally:
        a.close()
        b.close()


def test_wait_url_speaks_position_and_estimated_wait(worker: Worker) -> None:
    """Documented ``waitUrl`` parameters ``QueuePosition``, ``QueueTime``, ``AvgQueueTime``,
    ``CurrentQueueSize``: the caller hears the position and the estimated wait, then a pause
    (Twilio requests the waitUrl again when the TwiML ends)."""
    sid = "CA" + "2" * 32
    params = {**call_params(sid, "+15550100001", status="in-progress"), "QueuePosition": "3", "QueueTime": "12",
              "AvgQueueTime": "130", "CurrentQueueSize": "5", "QueueSid": "QU" + "0" * 32}
    root = twiml(post_signed(worker.client, "/twilio/wait", params))
    say = root.find("Say")
    assert say is not None and say.text == "You are number 3 in the queue. Your estimated wait is about 3 minutes."
    assert root.find("Pause") is not None


def test_connect_agent_over_rest_and_agent_callbacks(worker: Worker) -> None:
    """Documented REST ``POST /Calls/{CallSid}.json`` with ``Twiml`` (``calls(sid).update``): a
    ``<Dial action=…>`` with ``<Client statusCallbackEvent="answered">``. The answered callback →
    ``AgentAnswered`` and a dual-channel recording of the caller's call (``POST …/Recordings.json``),
    once even if retried; ``DialCallStatus=no-answer`` → ``AgentNoAnswer`` and the caller is
    enqueued again."""
    sid = "CA" + "3" * 32
    phone = demo_customer(1)["phone"]
    post_signed(worker.client, "/twilio/voice", call_params(sid, phone))
    post_signed(worker.client, "/twilio/gather/1", {**call_params(sid, phone, status="in-progress"), "Digits": "1"})
    call_id = call_of(worker, sid).id
    worker.backend.connect_agent(call_id, AgentEndpoint(7, "client:agent07"), ring_seconds=15)
    update = worker.http.posted(f"/Calls/{sid}.json")[-1]
    assert update["auth"] == (ACCOUNT_SID, AUTH_TOKEN)
    assert f"/Accounts/{ACCOUNT_SID}/" in update["path"]
    import xml.etree.ElementTree as ET

    dial = ET.fromstring(update["data"]["Twiml"]).find("Dial")
    assert dial is not None and dial.get("timeout") == "15"
    assert query_of(dial.get("action") or "") == {"call": call_id, "agent": "7"}
    client = dial.find("Client")
    assert client is not None and client.text == "agent07" and client.get("statusCallbackEvent") == "answered"

    answered = {"CallSid": "CA" + "7" * 32, "ParentCallSid": sid, "CallStatus": "in-progress",
                "AccountSid": ACCOUNT_SID}
    path = f"/twilio/agent-answered?call={call_id}&agent=7"
    assert post_signed(worker.client, path, answered).status_code == 200
    assert post_signed(worker.client, path, answered).status_code == 200
    assert [(e.call_id, e.agent_id) for e in worker.of(AgentAnswered)] == [(call_id, 7)]
    recordings = worker.http.posted(f"/Calls/{sid}/Recordings.json")
    assert len(recordings) == 1 and recordings[0]["data"]["RecordingChannels"] == "dual", "recorded once"

    missed = {**call_params(sid, phone, status="in-progress"), "DialCallStatus": "no-answer",
              "DialCallSid": "CA" + "8" * 32, "DialCallDuration": "0"}
    root = twiml(post_signed(worker.client, f"/twilio/agent-result?call={call_id}&agent=9", missed))
    enqueue = root.find("Enqueue")
    assert enqueue is not None and enqueue.text == "billing"
    assert [(e.call_id, e.agent_id) for e in worker.of(AgentNoAnswer)] == [(call_id, 9)]


def test_status_callbacks_become_one_hang_up(worker: Worker) -> None:
    """Documented status callback (``CallStatus=completed``, ``CallDuration``): one ``CallHungUp`` by the
    caller even when Twilio repeats it; a call we ended through REST (``Status=completed``) is
    reported ``by="platform"``. Non-final statuses (``ringing``) publish nothing."""
    sid_a, sid_b = "CA" + "4" * 32, "CA" + "5" * 32
    for sid in (sid_a, sid_b):
        post_signed(worker.client, "/twilio/voice", call_params(sid, "+15550100001"))
    post_signed(worker.client, "/twilio/status", call_params(sid_a, "+15550100001", status="ringing"))
    done = {**call_params(sid_a, "+15550100001", status="completed"), "CallDuration": "42"}
    post_signed(worker.client, "/twilio/status", done)
    post_signed(worker.client, "/twilio/status", done)
    call_b = call_of(worker, sid_b).id
    worker.backend.hangup(call_b)
    assert worker.http.posted(f"/Calls/{sid_b}.json")[-1]["data"] == {"Status": "completed"}
    post_signed(worker.client, "/twilio/status", {**call_params(sid_b, "+15550100001", status="completed")})
    assert [(e.call_id, e.by, e.cause) for e in worker.of(CallHungUp)] == [
        (call_of(worker, sid_a).id, "caller", "completed"), (call_b, "platform", "completed")]
    assert call_of(worker, sid_a).outcome == "abandoned"


class _WavServer(BaseHTTPRequestHandler):
    audio = b""
    seen: list[tuple[str, str]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization", "")))
        self.send_response(200)
        self.send_header("Content-Type", "audio/x-wav")
        self.send_header("Content-Length", str(len(self.audio)))
        self.end_headers()
        self.wfile.write(self.audio)

    def log_message(self, *args: Any) -> None:
        return


def _stereo_wav() -> bytes:
    buffer = BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\x00\x01\x00\x02" * 8000)
    return buffer.getvalue()


def test_recording_callback_downloads_and_queues_transcription(worker: Worker, tmp_path: Path) -> None:
    """Documented recording status callback (``RecordingSid``, ``RecordingUrl``, ``RecordingStatus=
    completed``, ``RecordingDuration``, ``RecordingChannels``): the WAV is fetched from
    ``RecordingUrl + ".wav"`` with HTTP basic auth (account SID, auth token), saved, a ``Recording``
    row and a transcription job are created, once even if the callback repeats. The media server is a
    real HTTP server on loopback."""
    _WavServer.audio = _stereo_wav()
    _WavServer.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _WavServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sid = "CA" + "6" * 32
        post_signed(worker.client, "/twilio/voice", call_params(sid, "+15550100001"))
        call_id = call_of(worker, sid).id
        worker.backend.start_recording(call_id)
        created = worker.http.posted(f"/Calls/{sid}/Recordings.json")[-1]["data"]
        assert created["RecordingChannels"] == "dual"
        assert created["RecordingStatusCallback"] == f"{PUBLIC}/twilio/recording"
        url = f"http://127.0.0.1:{server.server_address[1]}/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/RE{'9' * 32}"
        params = {"AccountSid": ACCOUNT_SID, "CallSid": sid, "RecordingSid": "RE" + "9" * 32, "RecordingUrl": url,
                  "RecordingStatus": "completed", "RecordingDuration": "2", "RecordingChannels": "2",
                  "RecordingSource": "StartCallRecordingAPI"}
        assert post_signed(worker.client, "/twilio/recording", params).status_code == 200
        assert post_signed(worker.client, "/twilio/recording", params).status_code == 200
        hooks = worker.app.extensions["twilio_webhooks"]
        hooks.wait_for_downloads()
        assert [p for p, _ in _WavServer.seen] == [f"/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/RE{'9' * 32}.wav"]
        assert _WavServer.seen[0][1].startswith("Basic ")
        with worker.platform.session_factory() as session:
            recordings = list(session.scalars(select(Recording).where(Recording.call_id == call_id)))
            assert len(recordings) == 1 and recordings[0].channels == 2
            assert Path(recordings[0].path).read_bytes() == _WavServer.audio
            jobs = list(session.scalars(select(TranscriptionJob).where(TranscriptionJob.call_id == call_id)))
            assert len(jobs) == 1 and jobs[0].recording_id == recordings[0].id
    finally:
        server.shutdown()
        server.server_close()
        thread.join(2)


def test_bad_requests_get_clear_answers(worker: Worker) -> None:
    """Signed but incomplete requests: no ``CallSid`` → 400; a Gather for a call we never saw → an
    apology and ``<Hangup/>``, not a crash; agent callbacks without ids → 400; hold → a clear error."""
    assert post_signed(worker.client, "/twilio/voice", {"From": "+15550100001"}).status_code == 400
    root = twiml(post_signed(worker.client, "/twilio/gather/1", call_params("CA" + "0" * 32, "+15550100001")))
    assert root.find("Hangup") is not None
    assert post_signed(worker.client, "/twilio/agent-result?call=x", {"DialCallStatus": "busy"}).status_code == 400
    with pytest.raises(TwilioUnsupported):
        worker.backend.hold("call-x", True)
    with pytest.raises(ValueError, match="client:LOGIN"):
        sid = "CA" + "9" * 32
        post_signed(worker.client, "/twilio/voice", call_params(sid, "+15550100001"))
        worker.backend.connect_agent(call_of(worker, sid).id, AgentEndpoint(1, "browser"), 10)


def test_console_app_serves_the_webhooks(worker: Worker, twilio_settings: Settings) -> None:
    """The console app registers ``/twilio/`` when the platform runs the Twilio backend: a signed
    webhook passes without a CSRF token (Twilio cannot send one), an unsigned one still gets 403."""
    from agent_console.app import create_app

    app = create_app(twilio_settings, platform=worker.platform)
    client = app.test_client()
    params = call_params("CA" + "a1" * 16, demo_customer(1)["phone"])
    assert twiml(post_signed(client, "/twilio/voice", params)).find("Gather") is not None
    assert post_signed(client, "/twilio/voice", params, signature="").status_code == 403
    app.extensions["twilio_webhooks"].drain()


def test_announcement_to_a_queued_caller_returns_them_to_the_queue(worker: Worker) -> None:
    """While a caller waits in ``<Enqueue>``, the router's periodic announcement (a ``Gather`` performed
    outside any webhook) goes out over REST (``POST /Calls/{CallSid}.json`` with ``Twiml``); its
    Gather callback without input (documented ``actionOnEmptyResult``) puts the caller back into the
    same queue instead of ending the call."""
    from ivr.actions import Gather, Prompt

    sid = "CA" + "b2" * 16
    phone = demo_customer(1)["phone"]
    post_signed(worker.client, "/twilio/voice", call_params(sid, phone))
    post_signed(worker.client, "/twilio/gather/1", {**call_params(sid, phone, status="in-progress"), "Digits": "1"})
    worker.app.extensions["twilio_webhooks"].drain()
    call_id = call_of(worker, sid).id
    worker.backend.perform(call_id, Gather(prompts=(Prompt("queue_next", "You are next in line."),)))
    import xml.etree.ElementTree as ET

    pushed = ET.fromstring(worker.http.posted(f"/Calls/{sid}.json")[-1]["data"]["Twiml"]).find("Gather")
    assert pushed is not None and pushed.get("action") == f"{PUBLIC}/twilio/gather/3"
    root = twiml(post_signed(worker.client, "/twilio/gather/3", call_params(sid, phone, status="in-progress")))
    enqueue = root.find("Enqueue")
    assert enqueue is not None and enqueue.text == "billing" and root.find("Hangup") is None
    assert call_of(worker, sid).state == "queued"
