"""The default flow walked through the pure engine: what the caller hears and what is collected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from callcentre.domain.context import ContextItem
from callcentre.domain.errors import AlreadyCollected
from ivr.actions import Enqueue, Gather, Hangup, RequestCallback
from ivr.engine import IvrEngine
from ivr.flow import default_flow_path, load_flow, parse_flow
from ivr.state import CallInfo, DigitsInput, NoInput, SpeechInput, state_from_dict, state_to_dict
from tests.directories import InMemoryDirectory

NOW = datetime(2026, 11, 18, 14, 0, tzinfo=UTC)  # a Wednesday afternoon


@pytest.fixture
def directory() -> InMemoryDirectory:
    return InMemoryDirectory(phones={"+15550100001": 1}, accounts={"10000002": 2, "10000007": 7},
                             pins={1: "0001", 2: "0002", 7: "0007"}, tiers={7: "gold"})


@pytest.fixture
def engine(directory: InMemoryDirectory) -> IvrEngine:
    return IvrEngine(load_flow(default_flow_path()), directory)


def call(caller: str = "+15550100001") -> CallInfo:
    return CallInfo("call-1", caller, "1000", NOW)


def ids(action: object) -> list[str]:
    return [p.id for p in getattr(action, "prompts", ())]


def test_known_caller_is_not_asked_for_an_account(engine: IvrEngine, directory: InMemoryDirectory) -> None:
    state, action = engine.start(call())
    assert isinstance(action, Gather)
    assert ids(action) == ["welcome", "main_menu"]
    assert "enter_account" not in ids(action)
    state, action = engine.step(state, DigitsInput("2"))
    assert isinstance(action, Enqueue)
    assert action.queue == "technical"
    assert action.required_skills == (("technical", 2),)
    assert not action.unidentified
    ctx = action.context
    assert ctx.get("customer_id") == "1" and ctx.item("customer_id").verified  # type: ignore[union-attr]
    assert ctx.get("identified_by") == "caller_id"
    assert ctx.get("reason") == "technical"
    assert "account_number" not in ctx
    assert "pin" not in directory.lookups


def test_unknown_caller_with_account_and_pin(engine: IvrEngine) -> None:
    state, action = engine.start(call("+19990000000"))
    assert ids(action) == ["welcome", "enter_account"]
    assert isinstance(action, Gather) and action.terminator == "#" and action.max_digits == 10
    state, action = engine.step(state, DigitsInput("10000002#"))
    assert ids(action) == ["enter_pin"]
    assert isinstance(action, Gather) and action.sensitive and action.max_digits == 4
    state, action = engine.step(state, DigitsInput("0002"))
    assert ids(action) == ["main_menu"]
    state, action = engine.step(state, DigitsInput("1"))
    assert isinstance(action, Enqueue) and action.queue == "billing"
    account = action.context.item("account_number")
    assert account is not None and account.value == "10000002" and account.verified
    assert action.context.get("identified_by") == "account_pin"
    assert all(item.value != "0002" for item in action.context)  # the PIN itself is never kept


def test_three_bad_pins_fall_back_unidentified(engine: IvrEngine) -> None:
    state, _ = engine.start(call("+19990000000"))
    state, action = engine.step(state, DigitsInput("10000002#"))
    state, action = engine.step(state, DigitsInput("1111"))
    assert ids(action) == ["bad_pin", "enter_pin"]
    state, action = engine.step(state, DigitsInput("2222"))
    assert ids(action) == ["bad_pin", "enter_pin"]
    state, action = engine.step(state, DigitsInput("3333"))
    # Fallback: the caller still gets to say why they call, then queues flagged unidentified.
    assert ids(action) == ["main_menu"]
    assert state.step == "main_menu_unidentified"
    state, action = engine.step(state, DigitsInput("1"))
    assert isinstance(action, Enqueue)
    assert action.unidentified
    assert "customer_id" not in action.context
    claimed = action.context.item("account_number")
    assert claimed is not None and claimed.value == "10000002" and not claimed.verified
    assert action.context.get("ivr_fallback_from") == "identify"


def test_silence_reprompts_then_falls_back(engine: IvrEngine) -> None:
    state, _ = engine.start(call())
    state, action = engine.step(state, NoInput())
    assert ids(action) == ["no_input", "main_menu"]
    state, action = engine.step(state, NoInput())
    assert ids(action) == ["no_input", "main_menu"]
    state, action = engine.step(state, NoInput())
    assert isinstance(action, Enqueue)
    assert action.queue == "general" and action.required_skills == (("general", 1),)
    assert ids(action) == ["connecting_general"]
    assert action.context.get("ivr_fallback_from") == "main_menu"


def test_wrong_key_gets_specific_message(engine: IvrEngine) -> None:
    state, _ = engine.start(call())
    state, action = engine.step(state, DigitsInput("7"))
    assert ids(action) == ["invalid", "main_menu"]
    state, action = engine.step(state, DigitsInput("3"))
    assert isinstance(action, Enqueue) and action.queue == "sales"


def test_menu_choice_sets_required_skills_and_vip_priority(engine: IvrEngine) -> None:
    state, _ = engine.start(call("+19990000000"))
    state, _ = engine.step(state, DigitsInput("10000007#"))
    state, action = engine.step(state, DigitsInput("0007"))
    assert ids(action) == ["vip", "main_menu"]
    state, action = engine.step(state, DigitsInput("1"))
    assert isinstance(action, Enqueue)
    assert action.required_skills == (("billing", 2),)
    assert action.priority == 5


def test_spoken_menu_choice_and_low_confidence(engine: IvrEngine) -> None:
    state, action = engine.start(call())
    assert isinstance(action, Gather) and "기술 지원" in action.speech_phrases
    state, action = engine.step(state, SpeechInput("기술 지원", 0.3))
    assert ids(action) == ["invalid", "main_menu"]
    state, action = engine.step(state, SpeechInput("기술 지원", 0.95))
    assert isinstance(action, Enqueue) and action.queue == "technical"


def test_repeat_caller_about_same_reason_gets_priority(directory: InMemoryDirectory) -> None:
    directory.calls.append((1, NOW - timedelta(days=2), "billing"))
    engine = IvrEngine(load_flow(default_flow_path()), directory)
    state, _ = engine.start(call())
    _, action = engine.step(state, DigitsInput("1"))
    assert isinstance(action, Enqueue) and action.priority == 3
    state, _ = engine.start(call())
    _, action = engine.step(state, DigitsInput("2"))
    assert isinstance(action, Enqueue) and action.priority == 0


def test_callback_request(engine: IvrEngine) -> None:
    state, _ = engine.start(call())
    _, action = engine.step(state, DigitsInput("9"))
    assert isinstance(action, RequestCallback)
    assert action.number == "+15550100001" and ids(action) == ["callback_ok"]


def test_nothing_collected_is_asked_again(engine: IvrEngine) -> None:
    """A context that already holds the reason skips the menu; re-adding an item is refused."""
    state, _ = engine.start(call())
    with pytest.raises(AlreadyCollected):
        state.context.with_item(ContextItem("caller_id", "+1", "again"))
    seeded = state.context.with_item(ContextItem("reason", "billing", "earlier"))
    from dataclasses import replace

    state = replace(state, context=seeded)
    _, action = engine._enter(state, "main_menu", [])
    assert isinstance(action, Enqueue) and action.queue == "billing"
    assert "main_menu" not in ids(action)


def test_collect_step_is_skipped_when_key_known() -> None:
    flow = parse_flow({
        "name": "t", "start": "ask", "fallback": "bye",
        "prompts": {"invalid": "x", "no_input": "y", "card": "Card number", "bye": "Bye"},
        "steps": {
            "ask": {"kind": "collect", "key": "card", "prompt": "card", "min_digits": 12, "max_digits": 19,
                    "validator": "luhn", "sensitive": True, "next": "again"},
            "again": {"kind": "collect", "key": "card", "prompt": "card", "min_digits": 12, "max_digits": 19,
                      "next": "bye"},
            "bye": {"kind": "hangup", "prompt": "bye"},
        },
    })
    engine = IvrEngine(flow, InMemoryDirectory())
    state, action = engine.start(call())
    assert isinstance(action, Gather) and action.sensitive
    state, action = engine.step(state, DigitsInput("4111111111111112#"))
    assert ids(action) == ["invalid", "card"]  # Luhn fails
    state, action = engine.step(state, DigitsInput("4111111111111111#"))
    assert isinstance(action, Hangup)  # "again" was skipped: the card is already known
    assert state.trail.count("again") == 1 and ids(action) == ["bye"]


def test_state_round_trips_through_json(engine: IvrEngine) -> None:
    state, _ = engine.start(call("+19990000000"))
    state, _ = engine.step(state, DigitsInput("10000002#"))
    restored = state_from_dict(state_to_dict(state))
    assert restored == state
    _, action = engine.step(restored, DigitsInput("0002"))
    assert ids(action) == ["main_menu"]
