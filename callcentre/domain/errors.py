"""One exception class per failure, carrying the ids involved."""

from __future__ import annotations


class CallCentreError(Exception):
    """Base of every error the platform raises on purpose."""


class IllegalTransition(CallCentreError):
    def __init__(self, call_id: str, from_state: str, to_state: str) -> None:
        super().__init__(f"call {call_id}: illegal transition {from_state} -> {to_state}")
        self.call_id = call_id
        self.from_state = from_state
        self.to_state = to_state


class UnknownCall(CallCentreError):
    def __init__(self, call_id: str) -> None:
        super().__init__(f"unknown call {call_id}")
        self.call_id = call_id


class AlreadyCollected(CallCentreError):
    """A step tried to collect a context item the call already has: the caller must not be asked twice."""

    def __init__(self, call_id: str, key: str, step: str) -> None:
        super().__init__(f"call {call_id}: {key!r} already collected; step {step!r} must not ask again")
        self.call_id = call_id
        self.key = key
        self.step = step
