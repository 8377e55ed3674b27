"""Broken flows are refused with the step named; any input sequence ends the IVR."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.actions import TERMINAL_ACTIONS
from ivr.engine import IvrEngine
from ivr.flow import FlowError, default_flow_path, load_flow, parse_flow
from ivr.state import CallInfo, DigitsInput, IvrInput, NoInput, SpeechInput
from tests.directories import InMemoryDirectory


def default_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(default_flow_path().read_text(encoding="utf-8"))
    return data


def broken(change: Any) -> dict[str, Any]:
    data = copy.deepcopy(default_data())
    change(data)
    return data


def test_default_flow_is_valid() -> None:
    flow = load_flow(default_flow_path())
    assert flow.start == "welcome" and flow.fallback == "general_fallback"


@pytest.mark.parametrize(("change", "step", "words"), [
    (lambda d: d["steps"]["welcome"].update(next="nowhere"), "welcome", "unknown target step 'nowhere'"),
    (lambda d: d["steps"].update(orphan={"kind": "hangup"}), "orphan", "unreachable"),
    (lambda d: d["steps"]["vip_welcome"].update(prompt="missing_prompt"), "vip_welcome", "not declared"),
    (lambda d: d["steps"]["main_menu"]["options"]["1"].pop("next"), "main_menu", "'next' is a required property"),
    (lambda d: d["steps"]["to_queue"].pop("queue"), "to_queue", "needs 'queue'"),
    (lambda d: d["steps"]["welcome"].update(kind="dance"), "welcome", "is not one of"),
])
def test_broken_flow_names_the_step(change: Any, step: str, words: str) -> None:
    with pytest.raises(FlowError) as info:
        parse_flow(broken(change), source="broken.yaml")
    assert info.value.step == step
    assert f"step {step!r}" in str(info.value)
    assert words in str(info.value)


def _loop_flow(steps: dict[str, Any], fallback: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "loop", "start": "a", "prompts": {"invalid": "i", "no_input": "n", "p": "p"},
                            "steps": steps}
    if fallback:
        data["fallback"] = fallback
    return data


def test_silent_cycle_is_a_loop_with_no_exit() -> None:
    data = _loop_flow({
        "a": {"kind": "say", "prompt": "p", "next": "b"},
        "b": {"kind": "branch", "conditions": [{"if": {"identified": True}, "next": "end"}], "else": "a"},
        "end": {"kind": "hangup"},
    })
    with pytest.raises(FlowError, match="loop with no exit") as info:
        parse_flow(data)
    assert info.value.step in {"a", "b"}


def test_cycle_that_never_reaches_an_ending() -> None:
    data = _loop_flow({
        "a": {"kind": "menu", "prompt": "p", "options": {"1": {"next": "b"}}, "on_failure": "b"},
        "b": {"kind": "say", "prompt": "p", "next": "a"},
    })
    with pytest.raises(FlowError, match="loop with no exit") as info:
        parse_flow(data)
    assert info.value.step in {"a", "b"}


def test_input_step_without_any_failure_route() -> None:
    data = _loop_flow({
        "a": {"kind": "menu", "prompt": "p", "options": {"1": {"next": "end"}}},
        "end": {"kind": "hangup"},
    })
    with pytest.raises(FlowError, match="on_failure") as info:
        parse_flow(data)
    assert info.value.step == "a"


def test_not_yaml_mapping() -> None:
    with pytest.raises(FlowError, match="mapping"):
        parse_flow(["not", "a", "flow"])


DEFAULT_FLOW = load_flow(default_flow_path())

inputs = st.one_of(
    st.text(alphabet="0123456789*#", min_size=0, max_size=12).map(DigitsInput),
    st.just(NoInput()),
    st.sampled_from(["billing", "기술 지원", "gibberish", ""]).flatmap(
        lambda t: st.floats(0, 1).map(lambda c: SpeechInput(t, c))),
)


@settings(max_examples=200, deadline=None)
@given(caller=st.sampled_from(["", "+15550100001", "+19990000000"]), script=st.lists(inputs, max_size=60))
def test_any_input_sequence_reaches_an_ending(caller: str, script: list[IvrInput]) -> None:
    """The engine can never loop forever: ≤ 40 caller inputs always end the IVR for this flow."""
    directory = InMemoryDirectory(phones={"+15550100001": 1}, accounts={"10000002": 2}, pins={2: "0002"})
    engine = IvrEngine(DEFAULT_FLOW, directory)
    state, action = engine.start(CallInfo("c", caller, "1000", datetime(2026, 1, 7, 12, tzinfo=UTC)))
    turns = 0
    fillers = iter([*script, *([NoInput()] * 60)])
    while not isinstance(action, TERMINAL_ACTIONS):
        state, action = engine.step(state, next(fillers))
        turns += 1
        assert turns <= 40, f"still in the IVR after {turns} inputs at {state.step}"
