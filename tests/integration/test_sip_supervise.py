"""Supervisor listen / whisper / barge on the embedded SIP endpoint, with real peers.

sipp is the caller (IVR by RFC 2833, then a looping 500 Hz pattern as its voice, its RTP received by a
sink that keeps every frame with its arrival time); headless baresip softphones are the agent (1400 Hz)
and the supervisor (2000 Hz), each dumping what it decoded (baresip's ``sndfile`` module). What a party
hears is judged by frequency: a frame "has" a voice when that voice's tone holds a fair share of the
frame's energy (mixed frames hold two tones).

Each test is one call, so the softphone dumps (whole-call) answer "did X ever hear Y":
* listen: the supervisor hears caller and agent; neither the agent nor the caller ever hears the
  supervisor; after the console's stop caller↔agent audio is as before; a second listen leg ends
  when the caller's call ends.
* whisper then barge: in whisper the agent hears the supervisor and the caller does not; switching
  the same leg to barge, the caller hears the supervisor too; after the supervisor hangs up
  caller↔agent audio is as before.
"""

from __future__ import annotations

import audioop
import re
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from callcentre.bus import EventBus
from callcentre.db.models import Agent, AuditEntry
from callcentre.db.session import session_scope
from callcentre.domain.events import AgentAnswered, CallQueued
from callcentre.passwords import hash_password
from callcentre.settings import Settings
from telephony.base import AgentEndpoint
from tests.baresip import Baresip
from tests.integration.sip_fixtures import (
    CALLER_KNOWN,
    RunningPlatform,
    seed_customers,
    sip_settings_fixture,  # noqa: F401  (fixture "sip_settings")
    start_platform,
    workdir,
)
from tests.integration.test_sip_consult import (
    TONE_A,
    TONE_B,
    TONE_CALLER,
    caller_scenario,
    seed_two_agents,
    tone_agent,
    tone_share,
    wait_until,
)
from tests.sipp import RtpSink, SippRun

pytestmark = [pytest.mark.peer, pytest.mark.slow]

TONE_AGENT, TONE_SUPERVISOR = TONE_A, TONE_B
PASSWORD = "supervise-test"
VOICES = {"caller": TONE_CALLER, "agent": TONE_AGENT, "supervisor": TONE_SUPERVISOR}
PRESENT = 0.15
"""Share of a frame's energy at a voice's frequency that says the voice is in it (a two-voice mix
gives each about a half; other tones give ~0)."""


def voices_in(pcm: bytes) -> set[str]:
    if audioop.rms(pcm, 2) <= 300:
        return set()
    return {name for name, freq in VOICES.items() if tone_share(pcm, freq) > PRESENT}


def count_voices(frames: list[bytes]) -> dict[str, int]:
    counts = dict.fromkeys(VOICES, 0)
    for frame in frames:
        for name in voices_in(frame):
            counts[name] += 1
    return counts


def dumped(phone: Baresip) -> dict[str, int]:
    """Frames of each voice in everything the softphone decoded (its sndfile dumps, all calls)."""
    frames: list[bytes] = []
    for dump in sorted((phone.workdir / "dump").glob("dump-*-dec.wav")):
        data = dump.read_bytes()
        channels, rate, bits = struct.unpack("<HIxxxxxxH", data[22:36])
        assert (channels, rate, bits) == (1, 8000, 16), (channels, rate, bits)
        pcm = data[data.index(b"data") + 8 :]
        frames += [pcm[i : i + 320] for i in range(0, len(pcm) - 320 + 1, 320)]
    assert frames, f"baresip {phone.user} dumped no received audio"
    return count_voices(frames)


@dataclass
class Ear(RtpSink):
    """The caller's RTP sink: every audio frame with its arrival time."""

    frames: list[tuple[float, bytes]] = field(default_factory=list)

    def on_packet(self, data: bytes, now: float) -> None:
        if len(data) > 12 and data[1] & 0x7F in (0, 8):
            payload = data[12:]
            pcm = audioop.ulaw2lin(payload, 2) if data[1] & 0x7F == 0 else audioop.alaw2lin(payload, 2)
            self.frames.append((now, pcm))

    def heard(self, since: float, until: float | None = None) -> dict[str, int]:
        end = until if until is not None else time.monotonic()
        return count_voices([pcm for at, pcm in list(self.frames) if since <= at <= end])


@dataclass
class Scene:
    running: RunningPlatform
    call_id: str
    agent: Baresip
    supervisor: Baresip
    endpoint: AgentEndpoint
    ear: Ear
    run: SippRun


@contextmanager
def supervised_call(sip_settings: Settings, tmp_path: Path) -> Iterator[Scene]:
    """A caller talking to the agent through the dispatcher; the supervisor's phone ready (not rung)."""
    seed_customers(sip_settings)
    with tone_agent(workdir(tmp_path, "agent"), "agentA", TONE_AGENT) as agent, \
         tone_agent(workdir(tmp_path, "supervisor"), "boss", TONE_SUPERVISOR) as boss:
        a_id, boss_id = seed_two_agents(sip_settings, agent.contact, boss.contact)
        running = start_platform(sip_settings)
        ear = Ear().start()
        work = workdir(tmp_path, "caller")
        run = SippRun(caller_scenario(work), running.target, work,
                      variables={"sinkport": str(ear.port), "caller": CALLER_KNOWN}, timeout_s=50).start()
        try:
            call_id = running.log.wait_for(CallQueued, timeout=15).call_id
            running.log.wait_for(AgentAnswered, timeout=15, where=lambda e: e.agent_id == a_id)
            agent.wait_event("CALL_ESTABLISHED", timeout=5)
            t0 = time.monotonic()
            wait_until(lambda: ear.heard(t0)["agent"] > 10, 5, "the caller hears the agent")
            yield Scene(running, call_id, agent, boss, AgentEndpoint(boss_id, boss.contact), ear, run)
        finally:
            run.stop()
            ear.stop()
            running.platform.stop()


def plain_audio_is_back(scene: Scene) -> None:
    """Caller↔agent exactly as before: the caller hears the agent alone, the caller's RTP is relayed."""
    call = scene.running.backend.calls[scene.call_id]
    caller_media = call.leg.media
    agent_media = call.agent.leg.media
    assert caller_media.bridged and agent_media.bridged
    time.sleep(0.3)  # mixed frames already in flight
    t = time.monotonic()
    before = caller_media.stats.relayed
    wait_until(lambda: scene.ear.heard(t)["agent"] > 20, 5, "the caller hears the agent again")
    heard = scene.ear.heard(t)
    assert heard["supervisor"] == 0, heard
    # the caller's speech goes straight to the agent again
    wait_until(lambda: caller_media.stats.relayed > before + 40, 5, "the caller's RTP is relayed to the agent")


def test_listen_supervisor_hears_both_nobody_hears_them(sip_settings: Settings, tmp_path: Path) -> None:
    with supervised_call(sip_settings, tmp_path) as scene:
        backend = scene.running.backend
        assert backend.supervision_modes == ("listen", "whisper", "barge")
        call = backend.calls[scene.call_id]
        relayed = call.leg.media.stats.relayed
        backend.supervise(scene.call_id, scene.endpoint, "listen")
        scene.supervisor.wait_event("CALL_ESTABLISHED", timeout=5)
        assert call.agent is not None and call.agent.agent_id != scene.endpoint.agent_id  # the agent keeps the call
        t = time.monotonic()
        time.sleep(2.5)
        heard = scene.ear.heard(t)
        assert heard["agent"] > 20 and heard["supervisor"] == 0, heard
        assert call.leg.media.stats.relayed > relayed + 50  # caller → agent untouched while listening

        backend.supervise(scene.call_id, scene.endpoint, "stop")  # the console's stop
        scene.supervisor.wait_event("CALL_CLOSED", timeout=5)
        assert backend.supervision_of(scene.call_id) is None
        plain_audio_is_back(scene)

        # Listening again, then the caller's call ends: the supervisor's leg ends with it.
        scene.supervisor.events.clear()
        backend.supervise(scene.call_id, scene.endpoint, "listen")
        scene.supervisor.wait_event("CALL_ESTABLISHED", timeout=5)
        time.sleep(1.0)
        backend.hangup(scene.call_id)
        scene.supervisor.wait_event("CALL_CLOSED", timeout=5)
        scene.agent.wait_event("CALL_CLOSED", timeout=5)
        assert scene.run.wait(20) == 0, scene.run.errors()
        assert backend.supervision_of(scene.call_id) is None
    at_boss, at_agent = dumped(scene.supervisor), dumped(scene.agent)
    assert at_boss["caller"] > 25 and at_boss["agent"] > 25, at_boss
    assert at_agent["supervisor"] == 0 and at_agent["caller"] > 25, at_agent
    assert scene.ear.heard(0.0)["supervisor"] == 0


def test_whisper_then_barge_then_supervisor_hangs_up(sip_settings: Settings, tmp_path: Path) -> None:
    with supervised_call(sip_settings, tmp_path) as scene:
        backend = scene.running.backend
        call = backend.calls[scene.call_id]
        backend.supervise(scene.call_id, scene.endpoint, "whisper")
        scene.supervisor.wait_event("CALL_ESTABLISHED", timeout=5)
        time.sleep(0.3)
        t = time.monotonic()
        time.sleep(2.5)
        heard = scene.ear.heard(t)
        assert heard["agent"] > 20 and heard["supervisor"] == 0, heard  # whisper: the caller never hears it
        assert not call.leg.media.bridged  # the caller reaches the agent through the mix only

        backend.supervise(scene.call_id, scene.endpoint, "barge")  # the same leg, a new mode
        assert backend.supervision_of(scene.call_id) == "barge"
        t = time.monotonic()
        wait_until(lambda: scene.ear.heard(t)["supervisor"] > 20, 5, "the caller hears the barging supervisor")
        assert scene.ear.heard(t)["agent"] > 10

        scene.supervisor.hangup()  # the supervisor's BYE
        wait_until(lambda: backend.supervision_of(scene.call_id) is None, 5, "the supervisor's leg is gone")
        assert not scene.agent.has_event("CALL_CLOSED")
        plain_audio_is_back(scene)
        time.sleep(1.0)  # margin for the softphone-side counts below
        backend.hangup(scene.call_id)
        assert scene.run.wait(20) == 0, scene.run.errors()
    at_boss, at_agent = dumped(scene.supervisor), dumped(scene.agent)
    assert at_boss["caller"] > 25 and at_boss["agent"] > 25, at_boss
    assert at_agent["supervisor"] > 25 and at_agent["caller"] > 25, at_agent


def console_login(client: FlaskClient, who: str) -> str:
    """Log in through the form (CSRF token from the page) and return the token for API posts."""
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    r = client.post("/login", data={"login": who, "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 302, r.get_data(as_text=True)
    page = client.get("/", follow_redirects=True).get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]


def test_console_supervisor_starts_and_stops_listening_agents_cannot(
    sip_settings: Settings, tmp_path: Path
) -> None:
    """The wallboard's API on the SIP platform: the capability is on, an agent is refused (403), the
    supervisor's POST (with CSRF) rings their SIP phone into the call, stop ends it; both are audited."""
    from agent_console.app import create_app

    with supervised_call(sip_settings, tmp_path) as scene:
        platform = scene.running.platform
        with session_scope(platform.session_factory) as db:
            for agent in db.scalars(select(Agent)):
                agent.password_hash = hash_password(PASSWORD)
                if agent.id == scene.endpoint.agent_id:
                    agent.role = "supervisor"
        app = create_app(scene.running.settings, platform=platform)
        url = f"/api/supervisor/calls/{scene.call_id}"

        agent = app.test_client()
        token = console_login(agent, "agentA")
        assert agent.post(f"{url}/listen", headers={"X-CSRFToken": token}).status_code == 403

        boss = app.test_client()
        token = console_login(boss, "agentB")  # seed_two_agents names the supervisor's row agentB
        caps = boss.get("/api/me").get_json()["capabilities"]
        assert all(caps[m]["enabled"] for m in ("listen", "whisper", "barge")), caps
        assert boss.post(f"{url}/listen").status_code == 400  # no CSRF token
        assert boss.post(f"{url}/spy", headers={"X-CSRFToken": token}).status_code == 404
        assert boss.post("/api/supervisor/calls/no-such-call/listen", headers={"X-CSRFToken": token}).status_code \
            == 404
        r = boss.post(f"{url}/listen", headers={"X-CSRFToken": token})
        assert r.status_code == 200 and r.get_json() == {"ok": True, "mode": "listen"}
        scene.supervisor.wait_event("CALL_ESTABLISHED", timeout=5)
        assert scene.running.backend.supervision_of(scene.call_id) == "listen"
        r = boss.post(f"{url}/stop", headers={"X-CSRFToken": token})
        assert r.status_code == 200
        scene.supervisor.wait_event("CALL_CLOSED", timeout=5)
        assert not scene.agent.has_event("CALL_CLOSED")
        scene.running.backend.hangup(scene.call_id)
        assert scene.run.wait(20) == 0, scene.run.errors()
        r = boss.post(f"{url}/listen", headers={"X-CSRFToken": token})
        assert r.status_code == 409 and "ended" in r.get_json()["error"]  # the call is over: a clear refusal
        with platform.session_factory() as db:
            rows = db.execute(select(AuditEntry.action, AuditEntry.actor, AuditEntry.target)
                              .where(AuditEntry.action.like("supervise%")).order_by(AuditEntry.id)).all()
    target = f"call:{scene.call_id}"
    assert [tuple(r) for r in rows] == [
        ("supervise_listen", "agentB", target),
        ("supervise_stop", "agentB", target),
        ("supervise_listen_refused", "agentB", target),
    ]


def test_capability_only_where_a_supervisor_can_be_bridged(session_factory: Any) -> None:
    """Memory, Asterisk and Twilio backends have no supervision: the buttons stay disabled with the reason."""
    from agent_console.actions import ConsoleActions
    from telephony.asterisk import AsteriskBackend
    from telephony.memory import MemoryBackend
    from telephony.sip import SipBackend
    from telephony.twilio import TwilioBackend

    caps = ConsoleActions(session_factory, EventBus(), MemoryBackend()).capabilities()
    for mode in ("listen", "whisper", "barge"):
        assert caps[mode] == {"enabled": False,
                              "reason": f"the memory backend cannot bridge a supervisor into a call ({mode})"}
    for cls in (AsteriskBackend, TwilioBackend, MemoryBackend):
        assert not hasattr(cls, "supervise") and not hasattr(cls, "supervision_modes"), cls
    assert SipBackend.supervision_modes == ("listen", "whisper", "barge") and callable(SipBackend.supervise)
