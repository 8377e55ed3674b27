"""What the caller did, as the IVR engine takes it: one mapping for every service that runs a flow."""

from __future__ import annotations

from callcentre.domain.events import DigitsReceived, InputTimedOut, SpeechHeard
from ivr.state import DigitsInput, IvrInput, NoInput, SpeechInput

CallerInputEvent = DigitsReceived | SpeechHeard | InputTimedOut
CALLER_INPUT_EVENTS: tuple[type[CallerInputEvent], ...] = (DigitsReceived, SpeechHeard, InputTimedOut)


def ivr_input(event: CallerInputEvent) -> IvrInput:
    if isinstance(event, DigitsReceived):
        return DigitsInput(event.digits)
    if isinstance(event, SpeechHeard):
        return SpeechInput(event.text, event.confidence)
    return NoInput()
