"""End to end: a sipp caller talks to browser agents through the WebRTC gateway, all on loopback.

Real parts only: sipp (Debian sip-tester) places the call and navigates the IVR with the shipped
RFC 2833 pcaps, then streams an espeak-ng speech WAV; the embedded SIP endpoint and IVR run as
``callcentre serve`` wires them, behind :class:`telephony.webrtc.backend.BrowserAgentBackend`;
two agents are logged in to the real console in Debian's chromium (Playwright) with fake
microphones playing other espeak-ng speech. The platform's own dispatcher assigns the call.

Audio is checked both ways by correlating loudness envelopes (100 ms windows) with their sources,
against a control (the same audio correlated with the *other* source).
"""

from __future__ import annotations

import audioop
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from callcentre.db.models import Agent, Recording, WebRtcLegQuality
from callcentre.db.session import session_scope
from callcentre.domain.events import AgentAnswered, CallEnded, CallHungUp, CallQueued, Event
from callcentre.settings import Settings
from tests.e2e.console_seed import PASSWORD, seed
from tests.e2e.webrtc_support import (
    CHROMIUM_FLAGS,
    WINDOW_S,
    RecordingSink,
    best_correlation,
    best_segment_correlation,
    browser_envelope,
    speech_wav,
    stereo_envelopes,
    ulaw_wav_envelope,
    wav_envelope,
)
from tests.integration.sip_fixtures import CALLER_KNOWN, EventLog, seed_customers
from tests.peers import require_binary, require_module
from tests.sipp import SippRun, dtmf_actions

pytestmark = [pytest.mark.peer, pytest.mark.slow]

CALLER_TEXT = ("Hello, my internet connection keeps dropping every evening. "
               "It started last week after the storm. Can you check the line for me?")
AGENT_TEXT = ("Thank you for calling technical support. I can see your line. "
              "Let me run a quick test, this will take one minute.")

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="webrtc caller">
  <Global variables="sinkport,caller" />
  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "caller" <sip:[$caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:[$caller]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [$sinkport] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send><![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "caller" <sip:[$caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:[$caller]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  DTMF
  <pause milliseconds="300"/>
  <nop><action><exec rtp_stream="CALLER_WAV,-1,0"/></action></nop>
  <recv request="BYE" timeout="120000"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
  ]]></send>
</scenario>
"""


@dataclass
class Centre:
    platform: Any
    backend: Any
    gateway: Any
    url: str
    log: EventLog
    agents: dict[str, int]
    settings: Settings


@pytest.fixture
def centre(settings: Settings, tmp_path: Path) -> Iterator[Centre]:
    from agent_console.app import create_app
    from agent_console.serving import serve_in_thread
    from callcentre.bootstrap import build_platform, prompts_dir
    from telephony.sip import SipBackend
    from telephony.webrtc.backend import BrowserAgentBackend
    from telephony.webrtc.gateway import WebRtcGateway

    settings = settings.replace("sip", host="127.0.0.1", port=0, rtp_port_low=0, rtp_port_high=0, numbers="1000")
    seed_customers(settings)
    gateway = WebRtcGateway(settings.webrtc)
    backend = BrowserAgentBackend(SipBackend(settings.sip, prompts_dir(settings)), gateway)
    platform = build_platform(settings, backend)
    seeded = seed(platform.session_factory, tmp_path / "recordings")
    with session_scope(platform.session_factory) as db:
        for agent in db.scalars(select(Agent).where(Agent.role == "agent")):
            agent.softphone = "browser"
            agent.state = "not_ready"
            agent.state_reason = "break"
    log = EventLog()
    platform.bus.subscribe(Event, log)
    platform.start()
    app = create_app(settings, platform)
    server = serve_in_thread(app)
    try:
        yield Centre(platform, backend, gateway, server.url, log, seeded.agents, settings)
    finally:
        server.stop()
        platform.stop()


@pytest.fixture
def chromium() -> Iterator[Any]:
    require_binary("chromium", "/usr/bin/chromium")
    require_module("playwright")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


def open_console(p: Any, centre: Centre, login: str, mic: Path, profile: Path, *, available: bool = True) -> Any:
    from playwright.sync_api import expect

    context = p.chromium.launch_persistent_context(
        str(profile), executable_path="/usr/bin/chromium", headless=True, bypass_csp=True,
        args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={mic}"],
        viewport={"width": 1300, "height": 1000},
    )
    page = context.pages[0] if context.pages else context.new_page()
    page.goto(centre.url + "/login")
    page.fill("#login", login)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    expect(page.locator("#live-status")).to_have_text("live", timeout=15_000)
    expect(page.locator("#softphone-status")).to_have_attribute("data-webrtc", "connected", timeout=15_000)
    if available:
        go_available(page)
    return page


def go_available(page: Any) -> None:
    from playwright.sync_api import expect

    page.click("#go-available")
    expect(page.locator("#state")).to_have_attribute("data-state", "available", timeout=5_000)


def selected_pair(page: Any) -> dict[str, str]:
    """The addresses of the browser's selected ICE candidate pair (the transport's, once it has one)."""
    found: dict[str, str] | None = None
    deadline = time.monotonic() + 10
    while found is None and time.monotonic() < deadline:
        found = page.evaluate("""async () => {
            const stats = await window.softphoneState.pc.getStats();
            let pairId = null; const byId = {};
            stats.forEach((s) => { byId[s.id] = s; if (s.type === "transport" && s.selectedCandidatePairId)
                                                      pairId = s.selectedCandidatePairId; });
            const pair = pairId ? byId[pairId] : null;
            if (!pair) return null;
            return { local: byId[pair.localCandidateId].address, remote: byId[pair.remoteCandidateId].address };
        }""")
        if found is None:
            time.sleep(0.2)
    assert found is not None, "the browser has no selected candidate pair"
    return dict(found)


def test_sipp_caller_browser_agents_audio_both_ways_warm_transfer(
    centre: Centre, chromium: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    caller_wav = speech_wav(CALLER_TEXT, tmp_path / "caller.wav", 8000, ulaw=True)
    agent_wav = speech_wav(AGENT_TEXT, tmp_path / "agent.wav", 16000)
    caller_env, agent_env = ulaw_wav_envelope(caller_wav), wav_envelope(agent_wav)

    agent1 = open_console(chromium, centre, "agent01", agent_wav, tmp_path / "profile1")
    # The second agent stays Not ready until the call is answered, so the router picks the first.
    agent2 = open_console(chromium, centre, "agent02", agent_wav, tmp_path / "profile2", available=False)
    a1, a2 = centre.agents["agent01"], centre.agents["agent02"]

    # Only loopback candidates on both sides.
    for agent_id in (a1, a2):
        answer_sdp = centre.gateway.sessions[agent_id].pc.localDescription.sdp
        cands = [line.split()[4] for line in answer_sdp.splitlines() if line.startswith("a=candidate:")]
        assert cands and all(c.startswith("127.") for c in cands), cands
    for page in (agent1, agent2):
        pair = selected_pair(page)
        assert pair["local"].startswith("127.") and pair["remote"].startswith("127."), pair

    sink = RecordingSink().start()
    work = tmp_path / "sipp"
    work.mkdir()
    scenario = work / "caller.xml"
    scenario.write_text(SCENARIO.replace("DTMF", dtmf_actions("2", first_pause_ms=1500))
                        .replace("CALLER_WAV", str(caller_wav)))
    host, port = centre.backend.address
    run = SippRun(scenario, f"{host}:{port}", work, variables={"sinkport": str(sink.port), "caller": CALLER_KNOWN},
                  timeout_s=120)
    try:
        run.start()
        queued = centre.log.wait_for(CallQueued, timeout=30)
        assert queued.queue == "technical"
        call_id = queued.call_id

        # The platform's dispatcher (router + reservations) offers it to the available browser agent.
        expect(agent1.locator("#answer")).to_be_visible(timeout=15_000)
        agent1.click("#answer")
        centre.log.wait_for(AgentAnswered, timeout=10, where=lambda e: e.agent_id == a1)
        agent1.wait_for_function("window.softphoneState.levels.remoteMax > 0.02", timeout=10_000)
        t0_mono, t0_ms = time.monotonic(), agent1.evaluate("Date.now()")
        time.sleep(8.0)
        t1_mono, t1_ms = time.monotonic(), agent1.evaluate("Date.now()")

        # Caller → browser: the page heard the caller's speech.
        trace1 = agent1.evaluate("window.softphoneState.trace")
        heard = browser_envelope(trace1, t0_ms + 500, t1_ms)
        assert max(heard) > 0.02, f"agent page heard only silence (max rms {max(heard):.4f})"
        # 5 s stretches: a busy browser's jitter buffer may stretch or skip a little, shifting alignment.
        caller_corr = best_segment_correlation(heard, caller_env)
        control1 = best_segment_correlation(heard, agent_env)
        # Browser → caller: sipp's sink got the agent's speech.
        at_caller = centre_env = RecordingSink.envelope_between(sink, t0_mono + 0.5, t1_mono)
        assert max(at_caller) > 600, f"caller heard only silence (max rms {max(centre_env)})"
        agent_corr = best_segment_correlation(at_caller, agent_env)
        control2 = best_segment_correlation(at_caller, caller_env)
        print(f"caller→browser corr {caller_corr:.2f} (control {control1:.2f}); "
              f"browser→caller corr {agent_corr:.2f} (control {control2:.2f})")
        assert caller_corr > 0.5 and caller_corr > control1 + 0.15
        assert agent_corr > 0.5 and agent_corr > control2 + 0.15

        # The page shows the connection state and a level meter that moves with the audio.
        expect(agent1.locator("#softphone-status")).to_contain_text("connected")
        agent1.wait_for_function("document.getElementById('softphone-level').value > 0.05", timeout=5_000)

        # Mute from the page: the caller hears silence from the agent; unmute brings the voice back.
        agent1.click("#mute")
        expect(agent1.locator("#unmute")).to_be_visible(timeout=5_000)
        muted_from = time.monotonic() + 0.5
        time.sleep(2.5)
        muted = sink.envelope_between(muted_from, time.monotonic())
        assert muted and max(muted) < 300, f"caller still hears the muted agent (max rms {max(muted)})"
        agent1.click("#unmute")
        expect(agent1.locator("#mute")).to_be_visible(timeout=5_000)

        # Hold from the page: the caller hears the backend's music, not the agent.
        agent1.click("#hold")
        expect(agent1.locator("#resume")).to_be_visible(timeout=5_000)
        held_from = time.monotonic() + 0.5
        time.sleep(3.0)
        held = sink.envelope_between(held_from, time.monotonic())
        assert max(held) > 600, "no hold music at the caller"
        music = centre.backend.inner._music(0)  # the SIP endpoint's hold music, as μ-law frames
        music_pcm = b"".join(audioop.ulaw2lin(f, 2) for f in music.frames)
        step = int(8000 * WINDOW_S) * 2
        music_env = [float(audioop.rms(music_pcm[i : i + step], 2)) for i in range(0, len(music_pcm) - step + 1, step)]
        music_corr, agent_on_hold = best_correlation(held, music_env), best_correlation(held, agent_env)
        assert music_corr > 0.9 and music_corr > agent_on_hold + 0.15, (music_corr, agent_on_hold)
        agent1.click("#resume")
        expect(agent1.locator("#hold")).to_be_visible(timeout=5_000)

        # The keypad in the page reaches the caller as RFC 4733 telephone-events, one per key.
        for key in "5#":
            agent1.click(f".key[data-key='{key}']")
            time.sleep(0.3)
        deadline = time.monotonic() + 5
        while sink.digits() != "5#" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sink.digits() == "5#"

        # Warm transfer from the page to the second browser agent, who answers in their page.
        go_available(agent2)
        agent1.select_option("#transfer-kind", "warm")
        agent1.select_option("#transfer-target-type", "agent")
        agent1.click("#transfer-target")
        agent1.wait_for_selector("#transfer-target option[value='agent02']:not([disabled])", state="attached",
                                 timeout=5_000)
        agent1.select_option("#transfer-target", "agent02")
        agent1.fill("#transfer-reason", "line test")
        agent1.fill("#transfer-note", "Evening drop-outs since the storm; please run the line test.")
        agent1.click("#transfer-submit")
        expect(agent2.locator("#answer")).to_be_visible(timeout=10_000)
        agent2.click("#answer")
        centre.log.wait_for(AgentAnswered, timeout=10, where=lambda e: e.agent_id == a2)
        # Consultation: the two agents hear each other (agent02 hears agent01's voice) while the caller
        # waits on hold music; then the first agent completes the hand-over.
        agent2.wait_for_function("window.softphoneState.levels.remoteMax > 0.02", timeout=10_000)
        tc_mono, tc_ms = time.monotonic(), agent2.evaluate("Date.now()")
        time.sleep(4.0)
        consulting = browser_envelope(agent2.evaluate("window.softphoneState.trace"), tc_ms + 500,
                                      agent2.evaluate("Date.now()"))
        assert max(consulting) > 0.02, "the consulted agent heard only silence"
        assert best_segment_correlation(consulting, agent_env, length=30, step=5) > 0.5
        held_in_consult = sink.envelope_between(tc_mono + 0.5, time.monotonic())
        music_corr, agents_heard = best_correlation(held_in_consult, music_env), best_correlation(
            held_in_consult, agent_env)
        assert music_corr > 0.9 and music_corr > agents_heard + 0.15, (music_corr, agents_heard)
        expect(agent1.locator("#transfer-complete")).to_be_visible(timeout=10_000)
        agent1.click("#transfer-complete")
        agent2.wait_for_function("window.softphoneState.levels.remoteMax > 0.02", timeout=10_000)
        t2_ms = agent2.evaluate("Date.now()")
        time.sleep(4.0)
        trace2 = agent2.evaluate("window.softphoneState.trace")
        heard2 = browser_envelope(trace2, t2_ms + 500, agent2.evaluate("Date.now()"))
        assert max(heard2) > 0.02, "the second agent heard only silence"
        assert best_segment_correlation(heard2, caller_env, length=30, step=5) > 0.5

        # The second agent hangs up from the page: the caller gets BYE and sipp ends cleanly.
        agent2.click("#hangup")
        assert run.wait(timeout=30) == 0, run.errors()
        centre.log.wait_for(CallHungUp, timeout=10)
        centre.log.wait_for(CallEnded, timeout=10)
    finally:
        run.stop()
        sink.stop()

    # The recording taps the same bridge: stereo, caller left and browser agents right, each
    # correlating with its own source.
    deadline = time.monotonic() + 15
    recording = None
    while recording is None and time.monotonic() < deadline:
        with centre.platform.session_factory() as db:
            recording = db.scalar(select(Recording).where(Recording.call_id == call_id,
                                                          Recording.kind == "conversation"))
        time.sleep(0.2)
    assert recording is not None, "no conversation recording"
    path = Path(recording.path)
    if not path.is_absolute():
        path = Path(centre.settings.recordings.directory) / path
    left, right = stereo_envelopes(path)
    assert recording.channels == 2 and max(left) > 600 and max(right) > 600
    left_corr = best_segment_correlation(left, caller_env)
    right_corr = best_segment_correlation(right, agent_env)
    print(f"recording: caller channel corr {left_corr:.2f}, agent channel corr {right_corr:.2f}")
    assert left_corr > 0.5 and right_corr > 0.5

    # Per-leg quality from the WebRTC statistics is stored with the call.
    deadline = time.monotonic() + 5
    rows: list[WebRtcLegQuality] = []
    while time.monotonic() < deadline:
        with centre.platform.session_factory() as db:
            rows = list(db.scalars(select(WebRtcLegQuality).where(WebRtcLegQuality.call_id == call_id)))
        if len(rows) >= 2:
            break
        time.sleep(0.2)
    by_agent = {r.agent_id: r for r in rows}
    assert set(by_agent) == {a1, a2}
    for row in rows:
        assert row.codec == "PCMU"
        assert row.packets_received > 100 and row.packets_lost == 0
        assert 0 <= row.jitter_ms < 30


def test_page_re_establishes_a_lost_session_and_agent_is_not_ready_meanwhile(
    centre: Centre, chromium: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    mic = speech_wav(AGENT_TEXT, tmp_path / "agent.wav", 16000)
    page = open_console(chromium, centre, "agent03", mic, tmp_path / "profile3")
    agent_id = centre.agents["agent03"]
    first = centre.gateway.sessions[agent_id]

    centre.gateway.close_session(agent_id)  # the server loses the session (restart, network …)
    expect(page.locator("#state")).to_have_attribute("data-state", "not_ready", timeout=10_000)
    expect(page.locator("#state-reason")).to_have_text("(softphone)")
    # The page notices (it asks the server every 5 s), reconnects with a fresh offer, and the agent
    # is Available again.
    deadline = time.monotonic() + 20
    def replaced() -> bool:
        current = centre.gateway.sessions.get(agent_id)
        return current not in (None, first) and centre.gateway.session_state(agent_id) == "connected"

    while time.monotonic() < deadline and not replaced():
        time.sleep(0.2)
    assert centre.gateway.session_state(agent_id) == "connected" and centre.gateway.sessions[agent_id] is not first
    expect(page.locator("#softphone-status")).to_have_attribute("data-webrtc", "connected", timeout=10_000)
    expect(page.locator("#state")).to_have_attribute("data-state", "available", timeout=10_000)


def test_a_second_tab_takes_the_audio_and_the_first_steps_aside(
    centre: Centre, chromium: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    mic = speech_wav(AGENT_TEXT, tmp_path / "agent.wav", 16000)
    first_tab = open_console(chromium, centre, "agent03", mic, tmp_path / "tab1")
    agent_id = centre.agents["agent03"]
    first_session = centre.gateway.session_id(agent_id)
    second_tab = open_console(chromium, centre, "agent03", mic, tmp_path / "tab2", available=False)
    second_session = centre.gateway.session_id(agent_id)
    assert second_session != first_session
    expect(first_tab.locator("#softphone-status")).to_contain_text("another tab", timeout=15_000)
    time.sleep(6)  # past the next health checks: nobody takes it back
    assert centre.gateway.session_id(agent_id) == second_session
    assert centre.gateway.session_state(agent_id) == "connected"
    expect(second_tab.locator("#softphone-status")).to_have_attribute("data-webrtc", "connected")
