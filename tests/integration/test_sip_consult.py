"""Warm transfer on the embedded SIP endpoint, through the dispatcher, with real peers.

sipp is the caller (IVR by RFC 2833, then a looping 500 Hz pattern as its voice); two headless baresip
softphones are the agents, each "speaking" its own tone (A 1400 Hz, B 2000 Hz, far from the hold
music's 392–660 Hz chords). The caller's RTP goes to a sink that keeps the audio, so what the caller
hears is checked by frequency: hold music during the consultation, then B's tone after completing,
or A's tone again after returning. Between the agents, our relay counters show audio both ways,
and each softphone's own dump of what it decoded (baresip's ``sndfile`` module) holds the other
agent's tone — which can only have reached it during the consultation.
"""

from __future__ import annotations

import audioop
import math
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from callcentre.db.models import Agent, AgentSkill, Queue, Skill
from callcentre.db.session import make_engine, make_session_factory
from callcentre.domain.events import AgentAnswered, AgentNoAnswer, CallQueued
from callcentre.settings import Settings
from routing import transfers as tr
from telephony.audio import tone_linear16, write_wav_linear16
from tests.baresip import Baresip
from tests.integration.sip_fixtures import (
    CALLER_KNOWN,
    RunningPlatform,
    calls_show,
    seed_customers,
    sip_settings_fixture,  # noqa: F401  (fixture "sip_settings")
    start_platform,
    workdir,
)
from tests.peers import require_binary
from tests.sipp import RtpSink, SippRun, render_scenario

pytestmark = [pytest.mark.peer, pytest.mark.slow]

TONE_CALLER, TONE_A, TONE_B = 500.0, 1400.0, 2000.0


class ToneAgent(Baresip):
    """A baresip agent whose voice is a tone of its own (so the caller's ear can tell agents apart)."""

    tone: float = TONE_A

    def _write_config(self) -> None:
        super()._write_config()
        # sndfile: baresip dumps what it hears (decoded RX, "-dec.wav") and says ("-enc.wav") per call.
        (self.workdir / "dump").mkdir(exist_ok=True)
        config = self.workdir / "config"
        config.write_text(config.read_text() + f"module\t\t\tsndfile.so\nsnd_path\t\t{self.workdir / 'dump'}\n")
        pcm = bytes(8000)
        while len(pcm) < 30 * 16000:
            pcm += tone_linear16((self.tone,), 0.8, 0.3) + bytes(3200)
        write_wav_linear16(self.workdir / "agent_voice.wav", pcm)


def heard_by(agent: Baresip) -> dict[str, int]:
    """20 ms frames of each voice in what the softphone decoded from its RTP over the whole call
    (baresip's sndfile dump): the caller (500 Hz), agent A (1400 Hz), agent B (2000 Hz)."""
    dumps = sorted((agent.workdir / "dump").glob("dump-*-dec.wav"))
    assert dumps, f"baresip {agent.user} dumped no received audio"
    data = dumps[-1].read_bytes()
    channels, rate, bits = struct.unpack("<HIxxxxxxH", data[22:36])
    assert (channels, rate, bits) == (1, 8000, 16), (channels, rate, bits)
    pcm = data[data.index(b"data") + 8 :]
    counts = {"caller": 0, "A": 0, "B": 0}
    for i in range(0, len(pcm) - 320 + 1, 320):
        frame = pcm[i : i + 320]
        if audioop.rms(frame, 2) <= 300:
            continue
        for name, freq in (("caller", TONE_CALLER), ("A", TONE_A), ("B", TONE_B)):
            if tone_share(frame, freq) > 0.5:
                counts[name] += 1
    return counts


def tone_agent(path: Path, user: str, tone: float, answermode: str = "auto") -> ToneAgent:
    agent = ToneAgent(path, user=user, answermode=answermode)
    agent.tone = tone
    return agent


def tone_share(pcm: bytes, freq: float) -> float:
    """Share of the frame's energy at ``freq`` (Goertzel; about 1 for a pure tone, 0 for others)."""
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    n = len(samples)
    energy = sum(s * s for s in samples)
    if n == 0 or energy == 0:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * freq / 8000)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return float(2 * power / (n * energy))


@dataclass
class CallerEar(RtpSink):
    """The caller's RTP sink: keeps every audio frame with its arrival time."""

    frames: list[tuple[float, bytes]] = field(default_factory=list)

    def on_packet(self, data: bytes, now: float) -> None:
        if len(data) > 12 and data[1] & 0x7F in (0, 8):
            payload = data[12:]
            pcm = audioop.ulaw2lin(payload, 2) if data[1] & 0x7F == 0 else audioop.alaw2lin(payload, 2)
            self.frames.append((now, pcm))

    def heard(self, since: float, until: float | None = None) -> dict[str, int]:
        """Frames since ``since`` that were agent A's tone, agent B's tone, or loud anything."""
        counts = {"A": 0, "B": 0, "loud": 0}
        end = until if until is not None else time.monotonic()
        for at, pcm in list(self.frames):
            if not since <= at <= end:
                continue
            if audioop.rms(pcm, 2) > 300:
                counts["loud"] += 1
                if tone_share(pcm, TONE_A) > 0.5:
                    counts["A"] += 1
                elif tone_share(pcm, TONE_B) > 0.5:
                    counts["B"] += 1
        return counts


def caller_scenario(work: Path) -> Path:
    """The agent_call scenario, but the caller talks (a 500 Hz pattern, μ-law) for as long as the call
    lasts (sipp ``rtp_stream`` looping) instead of the 7 s speech pcap, so every phase has caller audio."""
    sox = require_binary("sox")
    pcm = b""
    while len(pcm) < 4 * 16000:
        pcm += tone_linear16((TONE_CALLER,), 0.6, 0.3) + bytes(3200)
    linear = work / "caller_linear.wav"
    write_wav_linear16(linear, pcm)
    voice = work / "caller_voice.wav"
    subprocess.run([sox, str(linear), "-e", "u-law", str(voice)], check=True, timeout=30)
    scenario = render_scenario("agent_call.xml", work, digits="2", first_pause_ms=800)
    text = scenario.read_text()
    pcap = 'play_pcap_audio="/usr/share/sip-tester/g711a.pcap"'
    assert pcap in text
    scenario.write_text(text.replace(pcap, f'rtp_stream="{voice},-1,0"'))
    return scenario


def seed_two_agents(settings: Settings, first: str, second: str) -> tuple[int, int]:
    """Agent A available (the router gives them the call), agent B Not Ready until the transfer."""
    engine = make_engine(settings.database.url)
    with make_session_factory(engine)() as session:
        skill = Skill(name="technical")
        session.add(Queue(name="technical", required_skills=[["technical", 2]]))
        ids = []
        for login, contact, state in (("agentA", first, "available"), ("agentB", second, "not_ready")):
            agent = Agent(login=login, name=login, password_hash="-", state=state, sip_contact=contact,
                          softphone="sip")
            agent.skills.append(AgentSkill(skill=skill, proficiency=3))
            session.add(agent)
            session.flush()
            ids.append(agent.id)
        session.commit()
    engine.dispose()
    return ids[0], ids[1]


def set_available(running: RunningPlatform, agent_id: int) -> None:
    engine = make_engine(running.settings.database.url)
    with make_session_factory(engine)() as session:
        agent = session.get(Agent, agent_id)
        assert agent is not None
        agent.state = "available"
        session.commit()
    engine.dispose()


def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def consult(sip_settings: Settings, tmp_path: Path, finish: str) -> None:
    """Caller ↔ A; A consults B (agents talk, caller hears music); then ``complete`` or ``return``.
    ``finish="no_answer"``: B's phone rings out, A stays on the call and returns to the caller."""
    if finish == "no_answer":
        sip_settings = sip_settings.replace("routing", ring_seconds=2.0)
    seed_customers(sip_settings)
    with tone_agent(workdir(tmp_path, "agentA"), "agentA", TONE_A) as first, \
         tone_agent(workdir(tmp_path, "agentB"), "agentB", TONE_B,
                    answermode="manual" if finish == "no_answer" else "auto") as second:
        a_id, b_id = seed_two_agents(sip_settings, first.contact, second.contact)
        running = start_platform(sip_settings)
        ear = CallerEar().start()
        work = workdir(tmp_path, "caller")
        scenario = caller_scenario(work)
        run = SippRun(scenario, running.target, work, variables={"sinkport": str(ear.port), "caller": CALLER_KNOWN},
                      timeout_s=45).start()
        try:
            backend = running.backend
            dispatcher = running.platform.services["dispatcher"]
            queued = running.log.wait_for(CallQueued, timeout=15)
            call_id = queued.call_id
            running.log.wait_for(AgentAnswered, timeout=15, where=lambda e: e.agent_id == a_id)
            first.wait_event("CALL_ESTABLISHED", timeout=5)
            call = backend.calls[call_id]
            leg_a = call.agent
            assert leg_a is not None and leg_a.agent_id == a_id
            t0 = time.monotonic()
            wait_until(lambda: ear.heard(t0)["A"] > 10, 5, "the caller hears agent A")

            set_available(running, b_id)
            record = dispatcher.transfer(tr.TransferRequest(call_id, a_id, "warm", "agent", str(b_id), "approval"))
            if finish == "no_answer":
                rings_out(running, call_id, b_id, first, second, ear)
                dispatcher.return_warm(record.id)
                assert call.agent is leg_a and call.consult is None
                t2 = time.monotonic()
                wait_until(lambda: ear.heard(t2)["A"] > 20, 5, "the caller hears agent A again")
                backend.hangup(call_id)
                assert run.wait(20) == 0, run.errors()
                return
            running.log.wait_for(AgentAnswered, timeout=10, where=lambda e: e.agent_id == b_id)
            second.wait_event("CALL_ESTABLISHED", timeout=5)
            assert call.agent is leg_a and call.consult is not None and call.consult.agent_id == b_id
            assert not first.has_event("CALL_CLOSED")  # A's leg stays up while consulting
            media_a, media_b, caller_media = leg_a.leg.media, call.consult.leg.media, call.leg.media
            time.sleep(0.5)  # the last relayed agent frames already in flight to the caller
            t1 = time.monotonic()
            relayed = (media_a.stats.relayed, media_b.stats.relayed, caller_media.stats.relayed)
            caller_loud = caller_media.stats.received_loud
            time.sleep(3.0)  # long enough that the softphones' own counts below clear 25 frames under CI load
            # A and B hear each other: each leg's audio (their tones) is relayed into the other leg
            assert media_a.stats.relayed - relayed[0] > 40 and media_b.stats.relayed - relayed[1] > 40
            assert media_a.stats.received_loud > 5 and media_b.stats.received_loud > 5
            # ... and the caller hears the hold music, not the agents; their own audio goes nowhere
            consulting = ear.heard(t1)
            assert consulting["loud"] > 20 and consulting["A"] == 0 and consulting["B"] == 0, consulting
            assert caller_media.stats.received_loud > caller_loud  # the caller talks on hold ...
            assert caller_media.stats.relayed == relayed[2]  # ... and no agent hears it

            if finish == "complete":
                dispatcher.complete_warm(record.id)
                first.wait_event("CALL_CLOSED", timeout=5)  # our BYE ended A's leg
                assert call.agent is not None and call.agent.agent_id == b_id and call.consult is None
                assert second.has_event("CALL_ESTABLISHED") and not second.has_event("CALL_CLOSED")
                talking, gone, tone = media_b, "A", "B"
            else:
                dispatcher.return_warm(record.id)
                second.wait_event("CALL_CLOSED", timeout=5)  # our BYE ended B's leg
                assert call.agent is leg_a and call.consult is None
                assert not first.has_event("CALL_CLOSED")
                talking, gone, tone = media_a, "B", "A"
            time.sleep(0.3)
            t2 = time.monotonic()
            before = (talking.stats.relayed, caller_media.stats.relayed)
            wait_until(lambda: ear.heard(t2)[tone] > 20, 5, f"the caller hears agent {tone}")
            assert ear.heard(t2)[gone] == 0
            assert talking.stats.relayed > before[0]  # agent → caller
            wait_until(lambda: caller_media.stats.relayed > before[1] + 10, 5, "the caller's speech reaches the agent")
            time.sleep(1.0)  # margin for the softphone-side count of the caller's audio (asserted below)

            backend.hangup(call_id)
            assert run.wait(20) == 0, run.errors()
            (second if finish == "complete" else first).wait_event("CALL_CLOSED", timeout=5)
        finally:
            run.stop()
            ear.stop()
            running.platform.stop()
    # What the softphones themselves heard: the agents each other (only possible while consulting),
    # and the caller only the agent who had them.
    at_a, at_b = heard_by(first), heard_by(second)
    assert at_a["B"] > 25 and at_b["A"] > 25, (at_a, at_b)
    assert at_a["caller"] > 5, at_a  # before the transfer (and after returning, below)
    if finish == "complete":
        assert at_b["caller"] > 25, at_b
    else:
        assert at_b["caller"] == 0 and at_a["caller"] > 25, (at_a, at_b)
    shown = calls_show(sip_settings, call_id)
    legs = {s["agent_id"]: s for s in shown["segments"]}
    assert legs[a_id]["started_at"] is not None and legs[b_id]["started_at"] is not None
    if finish == "complete":
        assert legs[a_id]["end_reason"] == "transferred" and legs[a_id]["transfer_kind"] == "warm"
    else:
        assert legs[b_id]["end_reason"] == "consult_returned"


def rings_out(
    running: RunningPlatform, call_id: str, b_id: int, first: Baresip, second: Baresip, ear: CallerEar
) -> None:
    """B does not answer: we CANCEL, the caller keeps hearing music and is offered to nobody else."""
    from callcentre.db.models import QueueEntry

    second.wait_event("CALL_INCOMING", timeout=5)
    missed = running.log.wait_for(AgentNoAnswer, timeout=10, where=lambda e: e.agent_id == b_id)
    assert missed.call_id == call_id
    second.wait_event("CALL_CLOSED", timeout=5)
    call = running.backend.calls[call_id]
    assert call.consult is None and call.agent is not None and not first.has_event("CALL_CLOSED")
    t = time.monotonic()
    time.sleep(1.5)
    heard = ear.heard(t)
    assert heard["loud"] > 10 and heard["A"] == 0 and heard["B"] == 0, heard  # still hold music
    engine = make_engine(running.settings.database.url)
    with make_session_factory(engine)() as session:
        entry = session.query(QueueEntry).filter_by(call_id=call_id).one()
        assert entry.status == "connected"  # the first agent still has the caller
    engine.dispose()


def test_warm_transfer_consult_then_complete(sip_settings: Settings, tmp_path: Path) -> None:
    consult(sip_settings, tmp_path, "complete")


def test_warm_transfer_consult_then_return(sip_settings: Settings, tmp_path: Path) -> None:
    consult(sip_settings, tmp_path, "return")


def test_warm_transfer_unanswered_then_return(sip_settings: Settings, tmp_path: Path) -> None:
    consult(sip_settings, tmp_path, "no_answer")
