"""Adds recording, speech menus and the post-call survey to a built platform.

Called once from ``callcentre.bootstrap._wire_services``. What gets wired depends on the backend:

- a backend that carries audio in-process (it has an ``audio_sink`` attribute: the SIP endpoint)
  gets the recording service (fed through an :class:`AudioTap`) and, when a Vosk model is
  available and the flow has spoken phrases, the speech gate for grammar-mode menus;
- the IVR's backend is wrapped so sensitive gathers pause the recording and speech-enabled gathers
  open the speech gate;
- the survey runs whenever the flow says ``survey: true`` (backends without audio still get the
  DTMF questions; the spoken comment is recorded only where audio is available).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def install(platform: Any) -> dict[str, Any]:
    """Wire the services onto ``platform`` (a ``callcentre.bootstrap.Platform``); returns them by name."""
    from callcentre.survey_service import SurveyService, survey_policy
    from recordings.service import RecordingBackend, RecordingService
    from recordings.tap import AudioTap, FrameSink

    services: dict[str, Any] = {}
    backend = platform.backend
    recordings: RecordingService | None = None
    ivr_backend = platform.ivr.backend
    media = audio_backend(backend)
    if media is not None:
        sinks: list[FrameSink] = []
        tap_holder: list[AudioTap] = []
        recordings = RecordingService(platform.settings.recordings.directory, platform.session_factory,
                                      max_attempts=platform.settings.transcription.max_attempts,
                                      drain=lambda: tap_holder[0].drain() if tap_holder else None)
        recordings.subscribe(platform.bus)
        sinks.append(recordings.feed)
        gate = _speech_gate(platform)
        if gate is not None:
            from ivr.speech import SpeechBackend

            def to_gate(call_id: str, leg: str, pcm: bytes) -> None:
                if leg == "caller":
                    gate.feed(call_id, pcm)

            sinks.append(to_gate)
            ivr_backend = SpeechBackend(ivr_backend, gate)
            services["speech"] = gate
        tap = AudioTap(sinks)
        tap_holder.append(tap)
        media.audio_sink = tap
        ivr_backend = RecordingBackend(ivr_backend, recordings)
        services["recordings"] = recordings
        services["audio_tap"] = tap
    # The IVR service performs its actions through the wrappers (pause on PINs, listen for speech).
    platform.ivr.backend = ivr_backend
    if getattr(platform.flow, "survey", False):
        services["survey"] = SurveyService(platform.bus, backend, platform.session_factory,
                                           recordings=recordings, policy=survey_policy(platform.settings.survey))
    return services


def audio_backend(backend: Any) -> Any:
    """The backend itself, or one it wraps (``inner``), that hands out received audio frames."""
    for _ in range(4):
        if backend is None:
            return None
        if hasattr(backend, "audio_sink"):
            return backend
        backend = getattr(backend, "inner", None)
    return None


def _speech_gate(platform: Any) -> Any:
    flow = platform.flow
    phrases = [p for step in flow.steps.values() if step.kind == "menu"
               for option in step.spec.get("options", {}).values() for p in option.get("phrases", [])]
    if not phrases:
        return None
    try:
        from ivr.speech import SpeechGate, publish_to
        from recordings.transcription import TranscriptionError, default_model_path, load_vosk_model

        model = load_vosk_model(default_model_path(platform.settings.transcription))
    except (ImportError, TranscriptionError) as exc:
        log.warning("spoken menu choices disabled: %s", exc)
        return None
    return SpeechGate(model, publish_to(platform.bus), threshold=flow.speech_confidence)
