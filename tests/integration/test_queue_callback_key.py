"""A queue configured with callback key 5 tells its waiting callers "press 5", and 5 is what works.

The dispatcher runs on the real bus, a real database and the in-process backend (as in
test_dispatcher.py); the announcement it performs is then turned into audio by the SIP backend's own
prompt player, from the shipped recordings: every prompt must have a clip (none skipped).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from callcentre.db.models import Agent
from callcentre.domain.events import CallbackRequested
from callcentre.settings import Settings
from ivr.actions import Gather, Hangup
from routing import queue_experience as qx
from routing import reservations as rsv
from routing.dispatcher import DispatcherConfig
from telephony.sip import SipBackend
from tests.integration.test_dispatcher import Platform, _seed

PROMPTS = Path(__file__).resolve().parents[2] / "ivr" / "prompts"
PCMU = 0


def test_callback_offer_says_and_accepts_the_configured_key(db_sessions: sessionmaker[Session]) -> None:
    rules = qx.QueueRules("billing", callback_offer_after=60, callback_key="5", announce_every=60)
    platform = Platform(db_sessions, DispatcherConfig(
        policy=rsv.ReservationPolicy(ring_seconds=15, max_consecutive_misses=2), rules={"billing": rules}))
    (agent,) = _seed(platform.sessions, [4])
    with platform.sessions() as s:
        s.execute(update(Agent).where(Agent.id == agent).values(state="on_call"))
        s.commit()
    window = platform.dispatcher.window("billing")
    for i in range(40):  # 40 handled calls of 300 s: a reliable, long wait
        window.handled(platform.clock.now.timestamp() - i, 300.0)
    callers = [platform.arrive(f"+1555020{i}") for i in range(3)]
    third = callers[2]
    platform.clock.advance(60)
    platform.dispatcher.tick()

    announced = platform.backend.last_action(third)
    assert isinstance(announced, Gather) and announced.max_digits == 1
    ids = [p.id for p in announced.prompts]
    assert ids[-2:] == ["queue_callback_offer", "key_5"] and "key_1" not in ids
    assert " ".join(p.text for p in announced.prompts[-2:]) == (
        "To keep your place and be called back instead, press 5.")

    # What a SIP caller hears: the SIP backend's prompt player finds a recording for every prompt.
    sip = SipBackend(Settings().sip, PROMPTS)
    clips = sip._prompt_clips(announced, PCMU)
    assert [c.name for c in clips] == ids
    assert all(c.seconds > 0.3 for c in clips)

    platform.backend.press(third, "1")  # the old, wrong key does nothing
    assert not platform.of(CallbackRequested)
    platform.backend.press(third, "5")
    assert isinstance(platform.backend.last_action(third), Hangup)
    assert [(e.call_id, e.keep_place) for e in platform.of(CallbackRequested)] == [(third, True)]
