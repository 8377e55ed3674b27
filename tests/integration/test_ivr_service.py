"""The default flow driven through IvrService on the memory backend; the saved CallContext is checked.

Real SQLite database (migrated), real demo data, the in-memory telephony backend as the caller.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from callcentre.bootstrap import Platform, build_platform
from callcentre.db.models import Call, CallContextItem, Queue
from callcentre.demo_data import demo_customer
from callcentre.domain.events import CallbackRequested, CallEnded, CallQueued
from callcentre.settings import Settings
from telephony.memory import MemoryBackend


@pytest.fixture
def platform(demo_settings: Settings) -> Iterator[Platform]:
    plat = build_platform(demo_settings, MemoryBackend())
    plat.start()
    yield plat
    plat.stop()


@pytest.fixture
def events(platform: Platform) -> list[object]:
    seen: list[object] = []
    for kind in (CallQueued, CallEnded, CallbackRequested):
        platform.bus.subscribe(kind, seen.append)
    return seen


def backend(platform: Platform) -> MemoryBackend:
    assert isinstance(platform.backend, MemoryBackend)
    return platform.backend


def saved(platform: Platform, call_id: str) -> tuple[Call, dict[str, CallContextItem]]:
    with platform.session_factory() as session:
        call = session.get(Call, call_id)
        assert call is not None
        items = {i.key: i for i in session.scalars(select(CallContextItem).where(CallContextItem.call_id == call_id))}
        return call, items


def test_known_caller_id(platform: Platform, events: list[object]) -> None:
    phone = demo_customer(1)["phone"]
    call_id = backend(platform).place_call(phone)
    assert backend(platform).heard_ids(call_id) == ["welcome", "main_menu"]
    backend(platform).press(call_id, "2")
    call, items = saved(platform, call_id)
    assert call.state == "queued" and call.queued_at is not None
    assert call.reason == "technical" and call.required_skills == [["technical", 2]]
    assert call.customer_id is not None and not call.unidentified
    with platform.session_factory() as session:
        assert session.get(Queue, call.queue_id).name == "technical"  # type: ignore[union-attr]
    assert items["customer_id"].verified and items["identified_by"].value == "caller_id"
    assert items["caller_id"].value == phone and items["reason"].step == "main_menu"
    assert "account_number" not in items
    assert any(isinstance(e, CallQueued) and e.call_id == call_id and e.queue == "technical" for e in events)


def test_unknown_caller_with_account_and_pin(platform: Platform) -> None:
    spec = demo_customer(2)
    call_id = backend(platform).place_call("+19995550000")
    assert backend(platform).heard_ids(call_id)[-1] == "enter_account"
    backend(platform).press(call_id, spec["account_number"] + "#")
    backend(platform).press(call_id, spec["pin"])
    backend(platform).press(call_id, "1")
    call, items = saved(platform, call_id)
    assert call.state == "queued" and call.reason == "billing" and not call.unidentified
    assert items["account_number"].value == spec["account_number"] and items["account_number"].verified
    assert items["identified_by"].value == "account_pin"
    assert all(spec["pin"] != i.value for i in items.values())


def test_three_bad_pins_fallback(platform: Platform) -> None:
    spec = demo_customer(2)
    mem = backend(platform)
    call_id = mem.place_call("+19995550001")
    mem.press(call_id, spec["account_number"] + "#")
    for wrong in ("9999", "8888", "7777"):
        mem.press(call_id, wrong)
    assert mem.heard_ids(call_id)[-1] == "main_menu"
    mem.press(call_id, "1")
    call, items = saved(platform, call_id)
    assert call.state == "queued" and call.unidentified and call.customer_id is None
    assert not items["account_number"].verified
    assert items["ivr_fallback_from"].value == "identify"


def test_silence_reprompts_then_fallback(platform: Platform) -> None:
    mem = backend(platform)
    call_id = mem.place_call(demo_customer(1)["phone"])
    mem.silence(call_id)
    assert mem.heard_ids(call_id)[-2:] == ["no_input", "main_menu"]
    mem.silence(call_id)
    mem.silence(call_id)
    call, items = saved(platform, call_id)
    assert call.state == "queued" and call.reason == "" and call.required_skills == [["general", 1]]
    with platform.session_factory() as session:
        assert session.get(Queue, call.queue_id).name == "general"  # type: ignore[union-attr]
    assert items["ivr_fallback_from"].value == "main_menu"
    assert items["customer_id"].verified  # identified by caller ID before the menu failed


def test_menu_choice_sets_required_skills(platform: Platform) -> None:
    mem = backend(platform)
    call_id = mem.place_call(demo_customer(1)["phone"])
    mem.press(call_id, "3")
    call, items = saved(platform, call_id)
    assert call.required_skills == [["sales", 1]] and items["reason"].value == "sales"
    assert items["menu_main_menu"].value == "3"


def test_hang_up_mid_ivr_is_abandoned_with_what_was_collected(platform: Platform, events: list[object]) -> None:
    mem = backend(platform)
    call_id = mem.place_call("+19995550002")
    mem.press(call_id, demo_customer(2)["account_number"] + "#")
    mem.caller_hangs_up(call_id)
    call, items = saved(platform, call_id)
    assert call.state == "ended" and call.outcome == "abandoned" and call.ended_at_step == "identify"
    assert "caller_id" in items
    assert items["account_number"].value == demo_customer(2)["account_number"]
    assert not items["account_number"].verified  # typed, but the PIN was never given
    assert any(isinstance(e, CallEnded) and e.outcome == "abandoned" for e in events)
    mem.press(call_id, "1")  # late input after hang-up is ignored, not a crash
    assert saved(platform, call_id)[0].state == "ended"


def test_callback_request(platform: Platform, events: list[object]) -> None:
    mem = backend(platform)
    call_id = mem.place_call(demo_customer(1)["phone"])
    mem.press(call_id, "9")
    call, _ = saved(platform, call_id)
    assert call.state == "ended" and call.outcome == "callback"
    requested = [e for e in events if isinstance(e, CallbackRequested)]
    assert requested and requested[0].number == demo_customer(1)["phone"]
