"""Call state machine, CallContext, event bus and settings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from callcentre.bus import EventBus
from callcentre.domain.call_state import TRANSITIONS, CallState, check_transition
from callcentre.domain.context import CallContext, ContextItem
from callcentre.domain.errors import AlreadyCollected, IllegalTransition
from callcentre.domain.events import CallArrived, CallHungUp, DigitsReceived, Event
from callcentre.settings import SettingsError, load_settings


def test_legal_transitions_pass_and_illegal_ones_name_everything() -> None:
    assert check_transition("call-9", "ivr", "queued") is CallState.QUEUED
    with pytest.raises(IllegalTransition) as info:
        check_transition("call-9", CallState.ENDED, CallState.CONNECTED)
    assert (info.value.call_id, info.value.from_state, info.value.to_state) == ("call-9", "ended", "connected")
    assert "call-9" in str(info.value) and "ended -> connected" in str(info.value)
    with pytest.raises(IllegalTransition):
        check_transition("call-9", "queued", "bogus")


def test_every_state_is_in_the_table_and_ended_is_final() -> None:
    assert set(TRANSITIONS) == set(CallState)
    assert TRANSITIONS[CallState.ENDED] == frozenset()
    for state, targets in TRANSITIONS.items():
        if state is not CallState.ENDED:
            assert CallState.ENDED in targets, f"{state} must be able to end (hang-up can happen anywhere)"


def test_context_refuses_asking_twice_and_is_immutable() -> None:
    ctx = CallContext("c").with_item(ContextItem("reason", "billing", "menu"))
    with pytest.raises(AlreadyCollected) as info:
        ctx.with_item(ContextItem("reason", "technical", "menu2"))
    assert info.value.key == "reason" and info.value.step == "menu2"
    assert ctx.get("reason") == "billing"
    updated = ctx.replacing(ContextItem("menu_choice", "1", "menu"))
    assert "menu_choice" in updated and "menu_choice" not in ctx


def test_bus_delivers_by_type_and_survives_a_failing_handler(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    bus.subscribe(Event, broken)
    bus.subscribe(DigitsReceived, lambda e: seen.append(e.digits))
    bus.subscribe(Event, lambda e: seen.append(type(e).__name__))
    with caplog.at_level(logging.ERROR):
        bus.publish(DigitsReceived("c1", digits="42"))
        bus.publish(CallHungUp("c1", by="caller"))
    assert seen == ["42", "DigitsReceived", "CallHungUp"]
    assert bus.errors == 2
    bus.publish(CallArrived("c2", caller_id="+15550000000", dialled="1000", backend="memory"))
    assert "+15550000000" not in caplog.text  # customer data never reaches the log


def test_settings_layers(tmp_path: Path) -> None:
    config = tmp_path / "cc.toml"
    config.write_text('[database]\nurl = "sqlite:///from-file.db"\n[sip]\nport = 5070\n[twilio]\nauth_token = "t0k"\n')
    settings = load_settings(config, env={"CALLCENTRE_SIP_PORT": "5080", "CALLCENTRE_HTTP_PORT": "9000"})
    assert settings.database.url == "sqlite:///from-file.db"
    assert settings.sip.port == 5080 and settings.http.port == 9000
    shown = settings.as_dict()
    assert shown["twilio"]["auth_token"] == "********" and settings.twilio.auth_token == "t0k"
    assert load_settings(env={"CALLCENTRE_DATABASE_URL": "postgresql://x/y"}).database.url == "postgresql://x/y"
    assert load_settings(env={"CALLCENTRE_CONFIG": str(config)}).sip.port == 5070


@pytest.mark.parametrize(("env", "words"), [
    ({"CALLCENTRE_SIP_PORT": "fifty"}, "sip.port"),
    ({"CALLCENTRE_SIP_NOPE": "1"}, "unknown key sip.nope"),
])
def test_bad_settings_are_named(env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        load_settings(env=env)


def test_bad_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[nosuch]\nx = 1\n")
    with pytest.raises(SettingsError, match="unknown section"):
        load_settings(bad, env={})
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "missing.toml", env={})
