"""Backend-neutral actions the IVR engine returns and every telephony backend performs.

Consecutive ``say`` steps are folded into the ``prompts`` of the next action, so each action is one
round trip for any backend (a TwiML document, an AGI exchange, a pyVoIP playback + DTMF wait).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callcentre.domain.context import CallContext


@dataclass(frozen=True)
class Prompt:
    id: str
    """Key of the recorded prompt: ``<prompts_dir>/<id>.wav`` (8 kHz mono)."""
    text: str
    """What the prompt says, for text-to-speech backends (Twilio ``<Say>``) and ``ivr try``."""


@dataclass(frozen=True)
class Action:
    prompts: tuple[Prompt, ...] = field(default=(), kw_only=True)
    """Played in order before the action itself takes effect."""


@dataclass(frozen=True)
class Gather(Action):
    """Play the prompts and wait for DTMF (and speech, if ``speech_phrases`` and the backend can)."""

    max_digits: int = 1
    min_digits: int = 1
    terminator: str = "#"
    timeout_seconds: float = 5.0
    speech_phrases: tuple[str, ...] = ()
    sensitive: bool = False
    """Input is a PIN or card number: pause recording, never log it."""


@dataclass(frozen=True)
class Enqueue(Action):
    """Hand the call to the router, with everything the IVR collected."""

    queue: str
    required_skills: tuple[tuple[str, int], ...]
    priority: int
    language: str
    context: CallContext
    unidentified: bool = False


@dataclass(frozen=True)
class Transfer(Action):
    """Send the call to an outside number (blind)."""

    number: str
    context: CallContext


@dataclass(frozen=True)
class RequestCallback(Action):
    """The caller asked to be called back on ``number``; the platform hangs up after the prompts."""

    number: str
    queue: str
    context: CallContext


@dataclass(frozen=True)
class Hangup(Action):
    reason: str = "completed"
    context: CallContext | None = None


TERMINAL_ACTIONS = (Enqueue, Transfer, RequestCallback, Hangup)
