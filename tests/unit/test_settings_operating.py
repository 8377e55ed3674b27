"""Operating values that used to be fixed in code, now settings: each read from the TOML file and from
``CALLCENTRE_*`` environment, checked (a bad value names the setting), and reaching the part that uses it:
the SIP backend built by the bootstrap path, the survey service's sampling (seeded RNG), the wallboard's
alerts through the console API, and ``callcentre config show``."""

from __future__ import annotations

import json
import os
import random
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from callcentre.bootstrap import build_platform, make_backend
from callcentre.db.base import utcnow
from callcentre.db.models import Call, CallSegment, Queue
from callcentre.db.session import session_scope
from callcentre.settings import Settings, SettingsError, load_settings
from ivr.actions import Gather
from telephony.memory import MemoryBackend
from tests.e2e.console_seed import PASSWORD, seed
from tests.recordings_data import make_agent

OPERATING_TOML = """
[sip]
answer_delay = 2.5
rtp_timeout = 0
hold_message_every = 45
[survey]
sample_rate = 0.25
low_score = 1
[wallboard]
alert_longest_wait_seconds = 30
alert_min_csat = 3.5
alert_sms_min_interval_seconds = 120
"""

OPERATING_ENV = {
    "CALLCENTRE_SIP_ANSWER_DELAY": "2.5",
    "CALLCENTRE_SIP_RTP_TIMEOUT": "0",
    "CALLCENTRE_SIP_HOLD_MESSAGE_EVERY": "45",
    "CALLCENTRE_SURVEY_SAMPLE_RATE": "0.25",
    "CALLCENTRE_SURVEY_LOW_SCORE": "1",
    "CALLCENTRE_WALLBOARD_ALERT_LONGEST_WAIT_SECONDS": "30",
    "CALLCENTRE_WALLBOARD_ALERT_MIN_CSAT": "3.5",
    "CALLCENTRE_WALLBOARD_ALERT_SMS_MIN_INTERVAL_SECONDS": "120",
}

EXPECTED = {
    ("sip", "answer_delay"): 2.5,
    ("sip", "rtp_timeout"): 0.0,
    ("sip", "hold_message_every"): 45.0,
    ("survey", "sample_rate"): 0.25,
    ("survey", "low_score"): 1,
    ("wallboard", "alert_longest_wait_seconds"): 30.0,
    ("wallboard", "alert_min_csat"): 3.5,
    ("wallboard", "alert_sms_min_interval_seconds"): 120.0,
}


def _from_toml(tmp_path: Path) -> Settings:
    path = tmp_path / "operating.toml"
    path.write_text(OPERATING_TOML)
    return load_settings(path, env={})


def _from_env(tmp_path: Path) -> Settings:
    return load_settings(env=OPERATING_ENV)


SOURCES = [pytest.param(_from_toml, id="toml"), pytest.param(_from_env, id="env")]


def test_defaults_are_the_values_that_were_fixed_in_code() -> None:
    s = load_settings(env={})
    assert (s.sip.answer_delay, s.sip.rtp_timeout, s.sip.hold_message_every) == (0.0, 60.0, 30.0)
    assert (s.survey.sample_rate, s.survey.low_score) == (1.0, 2)
    assert (s.wallboard.alert_longest_wait_seconds, s.wallboard.alert_min_csat,
            s.wallboard.alert_sms_min_interval_seconds) == (60.0, 3.0, 900.0)


@pytest.mark.parametrize("load", SOURCES)
def test_each_setting_is_read(load: Any, tmp_path: Path) -> None:
    s = load(tmp_path)
    for (section, key), value in EXPECTED.items():
        assert getattr(getattr(s, section), key) == value, (section, key)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "operating.toml"
    path.write_text(OPERATING_TOML)
    s = load_settings(path, env={"CALLCENTRE_SURVEY_SAMPLE_RATE": "0.75", "CALLCENTRE_SIP_RTP_TIMEOUT": "90"})
    assert s.survey.sample_rate == 0.75 and s.sip.rtp_timeout == 90.0 and s.sip.answer_delay == 2.5


@pytest.mark.parametrize(("env", "words"), [
    ({"CALLCENTRE_SIP_ANSWER_DELAY": "-1"}, r"CALLCENTRE_SIP_ANSWER_DELAY \(sip.answer_delay\): must be at least 0"),
    ({"CALLCENTRE_SIP_RTP_TIMEOUT": "-5"}, r"sip.rtp_timeout\): must be at least 0"),
    ({"CALLCENTRE_SIP_HOLD_MESSAGE_EVERY": "-0.5"}, r"sip.hold_message_every\): must be at least 0"),
    ({"CALLCENTRE_SURVEY_SAMPLE_RATE": "1.5"}, r"survey.sample_rate\): must be between 0.0 and 1.0, got 1.5"),
    ({"CALLCENTRE_SURVEY_SAMPLE_RATE": "-0.1"}, r"survey.sample_rate\): must be between 0.0 and 1.0"),
    ({"CALLCENTRE_SURVEY_SAMPLE_RATE": "half"}, r"survey.sample_rate\): expected a number"),
    ({"CALLCENTRE_SURVEY_LOW_SCORE": "6"}, r"survey.low_score\): must be between 1 and 5"),
    ({"CALLCENTRE_WALLBOARD_ALERT_LONGEST_WAIT_SECONDS": "-60"}, r"wallboard.alert_longest_wait_seconds"),
    ({"CALLCENTRE_WALLBOARD_ALERT_MIN_CSAT": "7"}, r"wallboard.alert_min_csat\): must be between 1.0 and 5.0"),
    ({"CALLCENTRE_WALLBOARD_ALERT_SMS_MIN_INTERVAL_SECONDS": "-1"}, r"alert_sms_min_interval_seconds"),
])
def test_bad_values_are_refused_naming_the_setting(env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        load_settings(env=env)


def test_bad_value_in_the_file_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[survey]\nsample_rate = 2\n")
    with pytest.raises(SettingsError, match=re.escape(f"{path}: survey.sample_rate: must be between 0.0 and 1.0")):
        load_settings(path, env={})


def test_zero_is_allowed_where_it_means_off(tmp_path: Path) -> None:
    s = load_settings(env={"CALLCENTRE_SIP_RTP_TIMEOUT": "0", "CALLCENTRE_SIP_HOLD_MESSAGE_EVERY": "0",
                           "CALLCENTRE_SURVEY_SAMPLE_RATE": "0"})
    assert (s.sip.rtp_timeout, s.sip.hold_message_every, s.survey.sample_rate) == (0.0, 0.0, 0.0)


# -- reaching the components -------------------------------------------------------------------


@pytest.mark.parametrize("load", SOURCES)
def test_sip_backend_built_by_bootstrap_gets_the_values(load: Any, tmp_path: Path) -> None:
    backend = make_backend("sip", load(tmp_path))  # what `callcentre serve --backend sip` builds
    sip: Any = getattr(backend, "inner", backend)  # behind the WebRTC gateway when [webrtc] enabled
    assert type(sip).__name__ == "SipBackend"
    assert (sip.answer_delay, sip.rtp_timeout, sip.hold_message_every) == (2.5, 0.0, 45.0)


def test_sip_backend_defaults_through_bootstrap() -> None:
    sip: Any = make_backend("sip", load_settings(env={"CALLCENTRE_WEBRTC_ENABLED": "false"}))
    assert type(sip).__name__ == "SipBackend"
    assert (sip.answer_delay, sip.rtp_timeout, sip.hold_message_every) == (0.0, 60.0, 30.0)


def _offers(settings: Settings, seed_value: int, calls: int) -> tuple[int, Any]:
    """Run ``calls`` answered calls whose agent hangs up through a bootstrapped platform; count surveys."""
    platform = build_platform(settings, MemoryBackend())
    try:
        service = platform.services["survey"]
        service.rng = random.Random(seed_value)
        backend = platform.backend
        assert isinstance(backend, MemoryBackend)
        backend.start(platform.bus)
        offered = 0
        for _ in range(calls):
            call_id = backend.place_call("+821099990000")  # the IVR service saves the call row
            with session_scope(platform.session_factory) as session:
                agent = make_agent(session, "agent-" + call_id[-8:])
                session.add(CallSegment(call_id=call_id, agent_id=agent.id, started_at=utcnow()))
            backend.agent_hangs_up(call_id)
            offered += service.in_survey(call_id)
            if service.in_survey(call_id):
                assert isinstance(backend.last_action(call_id), Gather)
                backend.caller_hangs_up(call_id)
        return offered, service.policy
    finally:
        platform.stop()


@pytest.mark.parametrize(("rate", "seed_value"), [(0.0, 3), (1.0, 3), (0.25, 11), (0.6, 5)])
def test_survey_samples_per_setting(settings: Settings, rate: float, seed_value: int) -> None:
    calls = 16
    offered, policy = _offers(settings.replace("survey", sample_rate=rate, low_score=1), seed_value, calls)
    assert policy.sample_rate == rate and policy.low_score == 1
    # The same seeded draws the service makes: one per eligible call, offered when below the share.
    rng = random.Random(seed_value)
    expected = calls if rate >= 1.0 else sum(rng.random() < rate for _ in range(calls))
    assert offered == expected
    if 0.0 < rate < 1.0:
        assert 0 < offered < calls  # the seeds were picked so sampling is visibly partial


def test_survey_sample_rate_from_environment_reaches_the_service(settings: Settings) -> None:
    env_settings = load_settings(env={"CALLCENTRE_SURVEY_SAMPLE_RATE": "0"})
    merged = settings.replace("survey", sample_rate=env_settings.survey.sample_rate)
    offered, policy = _offers(merged, 1, 5)
    assert policy.sample_rate == 0.0 and offered == 0


# -- wallboard alerts through the console API ----------------------------------------------------


def _login(app: Flask, who: str) -> FlaskClient:
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert token
    r = client.post("/login", data={"login": who, "password": PASSWORD, "csrf_token": token.group(1)})
    assert r.status_code == 302
    return client


def _board_with_a_caller_waiting(settings: Settings, tmp_path: Path, waited: float) -> tuple[Flask, list[str]]:
    from agent_console.app import create_app

    app = create_app(settings)
    factory = app.extensions["callcentre_console"].session_factory
    seed(factory, tmp_path / "recordings")
    now = utcnow()
    with session_scope(factory) as db:
        billing = db.query(Queue).filter_by(name="billing").one()
        db.add(Call(id="call-waiting", caller_id="+8210555001", queue_id=billing.id, state="queued",
                    arrived_at=now - timedelta(seconds=waited + 20), queued_at=now - timedelta(seconds=waited)))
    board = _login(app, "supervisor").get("/api/wallboard").get_json()
    billing_row = next(q for q in board["queues"] if q["name"] == "billing")
    assert billing_row["longest_wait_seconds"] >= waited
    return app, [a["kind"] for a in board["alerts"] if a["queue"] == "billing"]


def test_longest_wait_alert_fires_at_the_configured_threshold(settings: Settings, engine: Any,
                                                              tmp_path: Path) -> None:
    tuned = settings.replace("wallboard", alert_longest_wait_seconds=30.0, alert_min_csat=3.5,
                             alert_sms_min_interval_seconds=120.0)
    app, kinds = _board_with_a_caller_waiting(tuned, tmp_path, waited=40)
    assert "longest_wait" in kinds
    assert app.config["ALERT_MIN_CSAT"] == 3.5
    assert app.extensions["callcentre_console"].alerts.min_interval == 120.0


def test_longest_wait_alert_quiet_below_the_default_threshold(settings: Settings, engine: Any,
                                                             tmp_path: Path) -> None:
    app, kinds = _board_with_a_caller_waiting(settings, tmp_path, waited=40)  # default threshold 60 s
    assert "longest_wait" not in kinds
    assert app.extensions["callcentre_console"].alerts.min_interval == 900.0


def test_wallboard_threshold_from_environment_reaches_the_console(settings: Settings, engine: Any,
                                                                  tmp_path: Path) -> None:
    from_env = load_settings(env={"CALLCENTRE_WALLBOARD_ALERT_LONGEST_WAIT_SECONDS": "10"})
    tuned = settings.replace("wallboard", alert_longest_wait_seconds=from_env.wallboard.alert_longest_wait_seconds)
    _app, kinds = _board_with_a_caller_waiting(tuned, tmp_path, waited=15)
    assert "longest_wait" in kinds


# -- config show ---------------------------------------------------------------------------------


def test_config_show_lists_the_operating_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from callcentre.cli import main

    path = tmp_path / "operating.toml"
    path.write_text(OPERATING_TOML)
    for name in list(os.environ):
        if name.startswith("CALLCENTRE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CALLCENTRE_SURVEY_SAMPLE_RATE", "0.5")
    result = CliRunner().invoke(main, ["--config", str(path), "config", "show", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    for (section, key), value in EXPECTED.items():
        want = 0.5 if (section, key) == ("survey", "sample_rate") else value
        assert shown[section][key] == want, (section, key)
    toml_out = CliRunner().invoke(main, ["--config", str(path), "config", "show"])
    assert toml_out.exit_code == 0
    assert "[wallboard]" in toml_out.output and "[survey]" in toml_out.output
    assert "answer_delay = 2.5" in toml_out.output


def test_config_show_refuses_a_bad_value_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from callcentre.cli import main

    monkeypatch.setenv("CALLCENTRE_SIP_ANSWER_DELAY", "-3")
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code != 0
    assert "CALLCENTRE_SIP_ANSWER_DELAY" in result.output and "at least 0" in result.output
