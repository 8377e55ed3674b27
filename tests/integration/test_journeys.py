"""The same caller journeys on every telephony backend: one parametrised test, one driver per backend.

A *driver* plays the caller on one backend and reports what the caller heard and how the IVR
ended, in backend-neutral terms, so each journey is written once:

* ``memory``   – the in-process backend (``telephony/memory.py``).
* ``asterisk`` – the real FastAGI server of ``telephony/asterisk.py``; Asterisk's side of the
  FastAGI protocol is played by ``tests/agi_peer.py`` as the Asterisk AGI documentation describes
  it (no Asterisk package exists for this machine).
* ``twilio``   – the real ``/twilio/`` webhooks, posted with the parameters Twilio documents and
  signed as Twilio signs them (no Twilio cloud here); the TwiML answers are parsed.

Every driver runs the real IVR engine, IvrService and demo database. To add a backend (the SIP
helper's pyVoIP leg, for instance), write a class with the :class:`Driver` methods and add it to
``DRIVERS``.
"""

from __future__ import annotations

import queue
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from sqlalchemy import select, update

from callcentre.bootstrap import Platform, build_platform, prompts_dir
from callcentre.db.models import Agent, Call, CallContextItem, SurveyResponse
from callcentre.db.session import make_engine, make_session_factory
from callcentre.demo_data import demo_customer
from callcentre.domain.events import AgentStateChanged
from callcentre.settings import Settings
from ivr.actions import Enqueue, Hangup, RequestCallback, Transfer
from ivr.flow import default_flow_path
from telephony.asterisk import AsteriskBackend
from telephony.memory import MemoryBackend
from telephony.twilio import TwilioBackend
from telephony.twilio_webhooks import create_twilio_app
from tests.agi_peer import AgiCaller, agi_environment
from tests.ami_peer import AmiPeer
from tests.twilio_support import ACCOUNT_SID, AUTH_TOKEN, PUBLIC, CapturingHttpClient, call_params, post_signed

OPERATOR = "+15550009999"
Ending = tuple[str, str]
"""(``queue``, queue name) | (``transfer``, number) | (``hangup``, reason or "")."""


class Driver(Protocol):
    name: str
    platform: Platform

    def call(self, caller: str) -> str:
        """Place a call; return the platform call id once the IVR has spoken its first action."""

    def press(self, call_id: str, digits: str) -> None:
        """Answer the current Gather with keys (a trailing ``#`` is the terminator)."""

    def silence(self, call_id: str) -> None:
        """Let the current Gather time out."""

    def heard(self, call_id: str) -> list[str]:
        """Prompt ids played to the caller, in order."""

    def ending(self, call_id: str) -> Ending: ...

    def agent_contact(self, login: str) -> str:
        """How this backend reaches an agent's phone (stored as the agent's ``sip_contact``)."""

    def agent_rung(self, call_id: str) -> int:
        """Wait until the platform rings an agent for the call; return the agent's id."""

    def agent_answers(self, call_id: str, agent_id: int) -> None: ...

    def agent_hangs_up(self, call_id: str, agent_id: int) -> None:
        """The agent ends the conversation; the caller stays on the line (for the survey)."""

    def close(self) -> None: ...


class MemoryDriver:
    name = "memory"

    def __init__(self, settings: Settings) -> None:
        self.backend = MemoryBackend()
        self.platform = build_platform(settings, self.backend)
        self.platform.start()

    def call(self, caller: str) -> str:
        return self.backend.place_call(caller)

    def press(self, call_id: str, digits: str) -> None:
        self.backend.press(call_id, digits)

    def silence(self, call_id: str) -> None:
        self.backend.silence(call_id)

    def heard(self, call_id: str) -> list[str]:
        return self.backend.heard_ids(call_id)

    def ending(self, call_id: str) -> Ending:
        action = self.backend.last_action(call_id)
        if isinstance(action, Enqueue):
            return ("queue", action.queue)
        if isinstance(action, Transfer):
            return ("transfer", action.number)
        if isinstance(action, Hangup | RequestCallback):
            return ("hangup", "")
        return ("in-ivr", type(action).__name__)

    def agent_contact(self, login: str) -> str:
        return f"sip:{login}@127.0.0.1"

    def agent_rung(self, call_id: str) -> int:
        _wait(lambda: self.backend.calls[call_id].ringing_agent is not None)
        ringing = self.backend.calls[call_id].ringing_agent
        assert ringing is not None
        return ringing.agent_id

    def agent_answers(self, call_id: str, agent_id: int) -> None:
        self.backend.agent_answers(call_id)

    def agent_hangs_up(self, call_id: str, agent_id: int) -> None:
        self.backend.agent_hangs_up(call_id)

    def close(self) -> None:
        self.platform.stop()


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the backend")
        time.sleep(0.005)


class AsteriskDriver:
    """FastAGI: each call is one AGI connection whose caller answers GET DATA from a queue."""

    name = "asterisk"

    def __init__(self, settings: Settings) -> None:
        self.peer = AmiPeer()
        ami = settings.asterisk
        ami = type(ami)(**{**ami.__dict__, "ami_host": "127.0.0.1", "ami_port": self.peer.port,
                           "ami_username": self.peer.username, "ami_secret": self.peer.secret,
                           "ping_interval": 0.5})
        self.backend = AsteriskBackend(ami, agi_port=0, agi_idle_seconds=10, action_timeout=3)
        self.platform = build_platform(settings, self.backend)
        self.platform.start()
        assert self.backend.link is not None and self.backend.link.wait_linked(5)
        self.callers: dict[str, tuple[AgiCaller, queue.Queue[str | None]]] = {}
        self.earlier: dict[str, list[str]] = {}
        self.envs: dict[str, dict[str, str]] = {}
        self._n = 0

    def call(self, caller: str) -> str:
        self._n += 1
        inputs: queue.Queue[str | None] = queue.Queue()
        env = agi_environment(uniqueid=f"1700009000.{self._n}", caller=caller)
        # What Asterisk reports on AMI for this channel: it appears, and the AGI tags it (VarSet).
        self.peer.emit({"Event": "Newchannel", "Channel": env["agi_channel"].replace("1", str(self._n)),
                        "ChannelState": "6", "ChannelStateDesc": "Up", "Uniqueid": env["agi_uniqueid"],
                        "Linkedid": env["agi_uniqueid"], "Context": "callcentre-in", "Exten": "1000"})
        agi = AgiCaller(self.backend.agi.address[1], env, inputs).start()
        _wait(lambda: agi.turns > 0 or not agi._thread.is_alive())
        call_id = agi.variables["CALLCENTRE_CALL_ID"]
        self.peer.emit({"Event": "VarSet", "Channel": env["agi_channel"], "Uniqueid": env["agi_uniqueid"],
                        "Variable": "CALLCENTRE_CALL_ID", "Value": call_id})
        self.callers[call_id] = (agi, inputs)
        self.envs[call_id] = env
        return call_id

    def _answer(self, call_id: str, value: str | None) -> None:
        agi, inputs = self.callers[call_id]
        turns = agi.turns
        inputs.put(value)
        _wait(lambda: agi.turns > turns or not agi._thread.is_alive())

    def press(self, call_id: str, digits: str) -> None:
        self._answer(call_id, digits)

    def silence(self, call_id: str) -> None:
        self._answer(call_id, None)

    def heard(self, call_id: str) -> list[str]:
        played = self.earlier.get(call_id, []) + self.callers[call_id][0].played
        return [p.split("/", 1)[1] for p in played if p.startswith("callcentre/")]

    def ending(self, call_id: str) -> Ending:
        agi = self.callers[call_id][0]
        agi.wait(5)
        nxt = agi.variables.get("CALLCENTRE_NEXT", "")
        if nxt == "queue":
            return ("queue", agi.variables["CALLCENTRE_QUEUE"])
        if nxt == "transfer":
            return ("transfer", agi.variables["CALLCENTRE_TRANSFER_TO"])
        return ("hangup", "") if nxt == "hangup" else ("in-ivr", nxt)

    def agent_contact(self, login: str) -> str:
        return f"sip:{login}@pbx.example.test"

    def _originate(self, call_id: str) -> dict[str, str] | None:
        for action in self.peer.actions_named("Originate"):
            if f"CALLCENTRE_CALL_ID={call_id}" in action.get("Variable", ""):
                return action
        return None

    def agent_rung(self, call_id: str) -> int:
        _wait(lambda: self._originate(call_id) is not None)
        action = self._originate(call_id)
        assert action is not None
        variables = dict(v.split("=", 1) for v in action["Variable"].split(","))
        return int(variables["CALLCENTRE_AGENT_ID"])

    def agent_answers(self, call_id: str, agent_id: int) -> None:
        # The peer answers the Originate (OriginateResponse Success); the backend then bridges.
        channel = self.envs[call_id]["agi_channel"]
        _wait(lambda: any(a.get("Channel1") == channel for a in self.peer.actions_named("Bridge")))

    def agent_hangs_up(self, call_id: str, agent_id: int) -> None:
        call = self.backend.call(call_id)
        assert call is not None and call.agent_uniqueid
        redirects = len(self.peer.actions_named("Redirect"))
        self.peer.emit({"Event": "Hangup", "Channel": call.agent_channel, "Uniqueid": call.agent_uniqueid,
                        "Cause": "16", "Cause-txt": "Normal Clearing"})
        # The survey sends the caller back into the IVR context; Asterisk then runs the AGI again.
        _wait(lambda: len(self.peer.actions_named("Redirect")) > redirects)
        redirect = self.peer.actions_named("Redirect")[-1]
        assert redirect["Exten"] == "resume" and redirect["Context"] == "callcentre-in"
        old, _ = self.callers[call_id]
        self.earlier[call_id] = self.earlier.get(call_id, []) + old.played
        inputs: queue.Queue[str | None] = queue.Queue()
        env = {**self.envs[call_id], "agi_extension": "resume", "agi_priority": "1"}
        agi = AgiCaller(self.backend.agi.address[1], env, inputs).start()
        _wait(lambda: agi.turns > 0 or not agi._thread.is_alive())
        self.callers[call_id] = (agi, inputs)

    def close(self) -> None:
        for agi, inputs in self.callers.values():
            inputs.put("hangup")
            agi.wait(5)
        self.platform.stop()
        self.peer.close()


class TwilioDriver:
    """Webhooks: each caller action is the next signed POST; the answers are TwiML documents."""

    name = "twilio"

    def __init__(self, settings: Settings) -> None:
        settings = settings.replace("twilio", account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, public_base_url=PUBLIC)
        self.engine = make_engine(settings.database.url)
        self.backend = TwilioBackend(settings.twilio, make_session_factory(self.engine),
                                     prompts_dir=prompts_dir(settings), http_client=CapturingHttpClient())
        self.platform = build_platform(settings, self.backend)
        self.platform.start()
        self.app = create_twilio_app(self.platform)
        self.client = self.app.test_client()
        self.calls: dict[str, dict[str, Any]] = {}
        self._n = 0

    def _post(self, call_id: str, path: str, extra: dict[str, str]) -> None:
        state = self.calls[call_id]
        params = {**call_params(state["sid"], state["caller"], status="in-progress"), **extra}
        response = post_signed(self.client, path, params)
        assert response.status_code == 200, response.get_data(as_text=True)
        root = ET.fromstring(response.get_data(as_text=True))
        state["twiml"].append(root)
        state["heard"] += [p.text.rsplit("/", 1)[1].removesuffix(".wav") for p in root.iter("Play") if p.text]

    def call(self, caller: str) -> str:
        self._n += 1
        sid = f"CA{self._n:032x}"
        response = post_signed(self.client, "/twilio/voice", call_params(sid, caller))
        root = ET.fromstring(response.get_data(as_text=True))
        with self.platform.session_factory() as session:
            call_id = session.scalar(select(Call.id).where(Call.backend_ref == sid))
        assert call_id is not None
        heard = [p.text.rsplit("/", 1)[1].removesuffix(".wav") for p in root.iter("Play") if p.text]
        self.calls[call_id] = {"sid": sid, "caller": caller, "twiml": [root], "heard": heard}
        return call_id

    def _gather_path(self, call_id: str) -> str:
        gather = self.calls[call_id]["twiml"][-1].find("Gather")
        assert gather is not None, "the caller is not being asked anything"
        return str(gather.get("action")).removeprefix(PUBLIC)

    def press(self, call_id: str, digits: str) -> None:
        # Twilio leaves the finishOnKey out of Digits.
        self._post(call_id, self._gather_path(call_id), {"Digits": digits.rstrip("#"), "FinishedOnKey": "#"})

    def silence(self, call_id: str) -> None:
        self._post(call_id, self._gather_path(call_id), {})

    def heard(self, call_id: str) -> list[str]:
        return list(self.calls[call_id]["heard"])

    def ending(self, call_id: str) -> Ending:
        last = self.calls[call_id]["twiml"][-1]
        if (enqueue := last.find("Enqueue")) is not None:
            return ("queue", str(enqueue.text))
        if (dial := last.find("Dial")) is not None:
            return ("transfer", str(dial.text))
        if last.find("Hangup") is not None:
            return ("hangup", "")
        return ("in-ivr", "Gather")

    def agent_contact(self, login: str) -> str:
        return f"client:{login}"

    def _dial(self, call_id: str) -> ET.Element | None:
        http = self.backend.client.http_client
        assert isinstance(http, CapturingHttpClient)
        for request in http.posted(f"/Calls/{self.calls[call_id]['sid']}.json"):
            dial = ET.fromstring(str(request["data"].get("Twiml", "<Response/>"))).find("Dial")
            if dial is not None:
                return dial
        return None

    def agent_rung(self, call_id: str) -> int:
        _wait(lambda: self._dial(call_id) is not None)
        dial = self._dial(call_id)
        assert dial is not None
        return int(parse_qs(urlsplit(str(dial.get("action"))).query)["agent"][0])

    def agent_answers(self, call_id: str, agent_id: int) -> None:
        leg = {"CallSid": "CA" + "a" * 32, "ParentCallSid": self.calls[call_id]["sid"], "CallStatus": "in-progress",
               "AccountSid": ACCOUNT_SID}
        response = post_signed(self.client, f"/twilio/agent-answered?call={call_id}&agent={agent_id}", leg)
        assert response.status_code == 200

    def agent_hangs_up(self, call_id: str, agent_id: int) -> None:
        self._post(call_id, f"/twilio/agent-result?call={call_id}&agent={agent_id}",
                   {"DialCallStatus": "completed", "DialCallSid": "CA" + "a" * 32, "DialCallDuration": "60"})

    def close(self) -> None:
        self.app.extensions["twilio_webhooks"].drain()
        self.platform.stop()
        self.engine.dispose()


DRIVERS: dict[str, Callable[[Settings], Driver]] = {
    "memory": MemoryDriver,
    "asterisk": AsteriskDriver,
    "twilio": TwilioDriver,
}


@pytest.fixture
def journey_settings(demo_settings: Settings, tmp_path: Path) -> Settings:
    """The default flow plus an operator option (``0`` → transfer), so the transfer journey exists."""
    flow = yaml.safe_load(default_flow_path().read_text())
    for menu in ("main_menu", "main_menu_unidentified"):
        flow["steps"][menu]["options"]["0"] = {"reason": "operator", "phrases": ["operator"], "next": "operator"}
    flow["steps"]["operator"] = {"kind": "transfer", "prompt": "connecting", "number": OPERATOR}
    path = tmp_path / "journeys.yaml"
    path.write_text(yaml.safe_dump(flow, sort_keys=False))
    return demo_settings.replace("ivr", flow=str(path))


@pytest.fixture(params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest, journey_settings: Settings) -> Iterator[Driver]:
    made = DRIVERS[request.param](journey_settings)
    yield made
    made.close()


def saved(driver: Driver, call_id: str) -> tuple[Call, dict[str, CallContextItem]]:
    with driver.platform.session_factory() as session:
        call = session.get(Call, call_id)
        assert call is not None
        items = {i.key: i for i in session.scalars(select(CallContextItem).where(CallContextItem.call_id == call_id))}
        return call, items


def test_known_caller(driver: Driver) -> None:
    """Caller ID on file → no account asked; menu 2 → technical queue, context says how we know them."""
    call_id = driver.call(demo_customer(1)["phone"])
    assert driver.heard(call_id) == ["welcome", "main_menu"]
    driver.press(call_id, "2")
    assert driver.ending(call_id) == ("queue", "technical")
    assert driver.heard(call_id) == ["welcome", "main_menu", "connecting"]
    call, items = saved(driver, call_id)
    assert call.state == "queued" and call.reason == "technical" and call.backend == driver.name
    assert items["identified_by"].value == "caller_id" and "account_number" not in items


def test_unknown_caller_with_account(driver: Driver) -> None:
    """Unknown number → account number (with #) and PIN → identified; menu 1 → billing; PIN never stored."""
    spec = demo_customer(2)
    call_id = driver.call("+19995550000")
    assert driver.heard(call_id) == ["welcome", "enter_account"]
    driver.press(call_id, spec["account_number"] + "#")
    driver.press(call_id, spec["pin"])
    driver.press(call_id, "1")
    assert driver.ending(call_id) == ("queue", "billing")
    assert driver.heard(call_id) == ["welcome", "enter_account", "enter_pin", "main_menu", "connecting"]
    call, items = saved(driver, call_id)
    assert items["account_number"].value == spec["account_number"] and items["identified_by"].value == "account_pin"
    assert all(spec["pin"] != i.value for i in items.values()) and not call.unidentified


def test_bad_input_fallback(driver: Driver) -> None:
    """Silence, a wrong key, silence again: specific re-prompts, then the fallback queue (no loop)."""
    call_id = driver.call(demo_customer(3)["phone"])
    driver.silence(call_id)
    driver.press(call_id, "7")
    driver.silence(call_id)
    assert driver.ending(call_id) == ("queue", "general")
    assert driver.heard(call_id) == ["welcome", "main_menu", "no_input", "main_menu", "invalid", "main_menu",
                                     "connecting_general"]
    call, items = saved(driver, call_id)
    assert call.state == "queued" and items["ivr_fallback_from"].value == "main_menu"


def test_transfer(driver: Driver) -> None:
    """Menu 0 → the operator's outside number, after the prompt; the call is marked transferred out."""
    call_id = driver.call(demo_customer(4)["phone"])
    driver.press(call_id, "0")
    assert driver.ending(call_id) == ("transfer", OPERATOR)
    assert driver.heard(call_id)[-1] == "connecting"
    call, _ = saved(driver, call_id)
    assert call.state == "transferring" and call.outcome == "transferred_out"


def agents_available(driver: Driver) -> None:
    """Every agent logs in and becomes available, reachable the way this backend rings phones."""
    with driver.platform.session_factory() as session:
        agents = list(session.scalars(select(Agent).where(Agent.role == "agent")))
        for agent in agents:
            session.execute(update(Agent).where(Agent.id == agent.id).values(
                state="available", sip_contact=driver.agent_contact(agent.login), softphone="sip"))
        session.commit()
    for agent in agents:
        driver.platform.bus.publish(AgentStateChanged(agent.id, "available"))


def test_survey(driver: Driver) -> None:
    """Queued → an agent is rung, answers, hangs up → the caller stays for the survey: score 4,
    solved, no comment; the answers are saved against the call and the agent who took it."""
    agents_available(driver)
    call_id = driver.call(demo_customer(1)["phone"])
    driver.press(call_id, "2")
    agent_id = driver.agent_rung(call_id)
    driver.agent_answers(call_id, agent_id)
    driver.agent_hangs_up(call_id, agent_id)
    _wait(lambda: driver.heard(call_id)[-1:] == ["survey_score"])
    assert driver.heard(call_id)[-2:] == ["survey_intro", "survey_score"]
    driver.press(call_id, "4")
    driver.press(call_id, "1")
    assert driver.heard(call_id)[-1] == "survey_comment"
    driver.press(call_id, "#")
    _wait(lambda: driver.heard(call_id)[-1:] == ["survey_thanks"])
    with driver.platform.session_factory() as session:
        survey = session.scalar(select(SurveyResponse).where(SurveyResponse.call_id == call_id))
        assert survey is not None
        assert (survey.score, survey.solved, survey.agent_id) == (4, True, agent_id)
