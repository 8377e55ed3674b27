"""Spoken menu choices: Vosk grammar mode over the phrases a ``Gather`` accepts.

Grammar (phrase-list) mode is what makes speech usable here: free-form Korean recognition of
telephone audio is poor, while a recogniser restricted to the menu's words recognises them reliably.
Two properties of Vosk's grammar mode shape this module:

- words missing from the model's vocabulary are dropped (with a warning), so phrases are checked
  against the vocabulary first and a phrase with any unknown word is left out of the grammar;
- the grammar is a word loop, so the recogniser *always* returns some words from it, even for a
  cough or an out-of-menu answer. A result therefore counts only if its words are exactly one
  phrase (or contain exactly one phrase) and the weakest word's confidence reaches the threshold;
  anything else is a **no match**, reported with confidence 0 so the IVR engine re-prompts.

The engine stays pure: this adapter turns audio into ``SpeechHeard(text, confidence)`` events for
backends that carry audio (see :class:`SpeechGate`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from callcentre.bus import EventBus
from callcentre.domain.events import SpeechHeard
from ivr.actions import Action, Gather
from telephony.base import AgentEndpoint, TelephonyBackend
from telephony.wrapper import BackendWrapper

DEFAULT_THRESHOLD = 0.6
DECOYS: tuple[str, ...] = ("안녕하세요", "감사합니다", "잠깐만요")
"""Common out-of-menu words added to every grammar so other speech has somewhere to go besides a
menu phrase (the model has no garbage word); a result made of decoys is a no match."""
SAMPLE_RATE = 8000


@dataclass(frozen=True)
class SpeechMatch:
    phrase: str | None
    """The menu phrase recognised, or None for no match."""
    confidence: float
    """Lowest word confidence of the match (0 for no match)."""
    heard: str
    """What the recogniser returned (for tests and tuning; may be customer speech: never log it)."""

    @property
    def matched(self) -> bool:
        return self.phrase is not None


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


class PhraseGrammar:
    """The phrases of one menu, reduced to what the model can recognise."""

    def __init__(self, model: Any, phrases: Iterable[str]) -> None:
        self.model = model
        wanted = []
        for phrase in phrases:
            norm = _normalise(phrase)
            if norm and norm not in wanted:
                wanted.append(norm)
        self.phrases: tuple[str, ...] = tuple(p for p in wanted if self._known(p))
        self.unusable: tuple[str, ...] = tuple(p for p in wanted if p not in self.phrases)
        """Phrases with a word the model does not know (e.g. English words with a Korean model)."""

    def _known(self, phrase: str) -> bool:
        return all(self.model.vosk_model_find_word(word) >= 0 for word in phrase.split())

    def recogniser(self) -> Any:
        import vosk

        decoys = [d for d in DECOYS if d not in self.phrases and self._known(d)]
        grammar = json.dumps([*self.phrases, *decoys], ensure_ascii=False)
        recogniser = vosk.KaldiRecognizer(self.model, SAMPLE_RATE, grammar)
        recogniser.SetWords(True)
        return recogniser

    def match(self, result: dict[str, Any], threshold: float) -> SpeechMatch:
        words = result.get("result", [])
        heard = _normalise(str(result.get("text", "")))
        if not words or not heard:
            return SpeechMatch(None, 0.0, heard)
        # Exactly one phrase and nothing else: extra words mean the word loop was filling in for
        # speech that was not a menu phrase (measured: "안녕하세요" comes back as "지원 요금 지원").
        if heard not in self.phrases:
            return SpeechMatch(None, 0.0, heard)
        phrase = heard
        confidence = min(float(w.get("conf", 0.0)) for w in words)
        if confidence < threshold:
            return SpeechMatch(None, 0.0, heard)
        return SpeechMatch(phrase, confidence, heard)


def recognise(model: Any, pcm16: bytes, phrases: Iterable[str], *,
              threshold: float = DEFAULT_THRESHOLD) -> SpeechMatch:
    """One utterance (16-bit PCM, 8 kHz) against ``phrases``."""
    grammar = PhraseGrammar(model, phrases)
    if not grammar.phrases:
        return SpeechMatch(None, 0.0, "")
    recogniser = grammar.recogniser()
    recogniser.AcceptWaveform(pcm16)
    return grammar.match(json.loads(recogniser.FinalResult()), threshold)


SpeechCallback = Callable[[str, SpeechMatch], None]
"""Receives ``(call_id, match)`` when an utterance ends."""


class _Listening:
    def __init__(self, grammar: PhraseGrammar) -> None:
        self.grammar = grammar
        self.recogniser = grammar.recogniser()
        self.lock = threading.Lock()


class SpeechGate:
    """Listens to callers while a speech-enabled ``Gather`` is open; one recogniser per call.

    ``listen(call_id, phrases)`` when the gather starts, ``feed(call_id, pcm16)`` with caller audio,
    ``stop_listening(call_id)`` when the gather ends. Vosk's endpointing (silence after speech) ends
    utterance; the first utterance yields one ``on_result(call_id, match)`` and listening stops, as
    the engine moves on (matched) or re-prompts (no match, confidence 0).
    """

    def __init__(self, model: Any, on_result: SpeechCallback, *, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.model = model
        self.on_result = on_result
        self.threshold = threshold
        self._calls: dict[str, _Listening] = {}
        self._lock = threading.Lock()

    def listen(self, call_id: str, phrases: Iterable[str]) -> bool:
        grammar = PhraseGrammar(self.model, phrases)
        if not grammar.phrases:
            self.stop_listening(call_id)
            return False
        with self._lock:
            self._calls[call_id] = _Listening(grammar)
        return True

    def listening(self, call_id: str) -> bool:
        with self._lock:
            return call_id in self._calls

    def stop_listening(self, call_id: str) -> None:
        with self._lock:
            self._calls.pop(call_id, None)

    def feed(self, call_id: str, pcm16: bytes) -> None:
        with self._lock:
            state = self._calls.get(call_id)
        if state is None:
            return
        with state.lock:
            if not state.recogniser.AcceptWaveform(pcm16):
                return
            result = json.loads(state.recogniser.Result())
        if not result.get("text"):
            return  # endpoint on silence only: keep listening
        self.stop_listening(call_id)
        self.on_result(call_id, state.grammar.match(result, self.threshold))

    def flush(self, call_id: str) -> SpeechMatch | None:
        """End of input (gather timed out): whatever was said so far, decided now."""
        with self._lock:
            state = self._calls.pop(call_id, None)
        if state is None:
            return None
        with state.lock:
            result = json.loads(state.recogniser.FinalResult())
        if not result.get("text"):
            return None
        match = state.grammar.match(result, self.threshold)
        self.on_result(call_id, match)
        return match


def publish_to(bus: EventBus) -> SpeechCallback:
    """A gate callback that turns matches into ``SpeechHeard`` events (no match: confidence 0, so the
    IVR engine treats it as invalid input and re-prompts)."""

    def publish(call_id: str, match: SpeechMatch) -> None:
        bus.publish(SpeechHeard(call_id, text=match.phrase or "", confidence=match.confidence))

    return publish


class SpeechBackend(BackendWrapper):
    """Wraps a telephony backend that carries audio: listens while a speech-enabled gather is open.

    The wrapped backend (or its media layer) hands caller audio to ``gate.feed``; this wrapper only
    decides *when* to listen, from the actions the IVR asks for.
    """

    def __init__(self, inner: TelephonyBackend, gate: SpeechGate) -> None:
        super().__init__(inner)
        self.gate = gate

    def perform(self, call_id: str, action: Action) -> None:
        if isinstance(action, Gather) and action.speech_phrases and not action.sensitive:
            self.gate.listen(call_id, action.speech_phrases)
        else:
            self.gate.stop_listening(call_id)
        self.inner.perform(call_id, action)

    def connect_agent(self, call_id: str, agent: AgentEndpoint, ring_seconds: float) -> None:
        self.gate.stop_listening(call_id)
        self.inner.connect_agent(call_id, agent, ring_seconds)

    def hangup(self, call_id: str) -> None:
        self.gate.stop_listening(call_id)
        self.inner.hangup(call_id)
