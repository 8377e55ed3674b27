"""Who may play a recording or read a transcript, and the audit trail of every playback.

Allowed: supervisors and admins; an agent who handled the call (has a segment on it). Everyone else
is refused, and the refusal is audited as well, so probing shows up in the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from callcentre.db.models import Agent, AuditEntry, CallSegment, Recording, Transcript

PRIVILEGED_ROLES = frozenset({"supervisor", "admin"})


class AccessDenied(Exception):
    def __init__(self, agent_id: int | None, what: str, target_id: int | str) -> None:
        super().__init__(f"agent {agent_id} may not {what} {target_id}")
        self.agent_id = agent_id
        self.target_id = target_id


class RecordingUnavailable(Exception):
    """The recording was purged or its file is missing."""

    def __init__(self, recording_id: int, why: str) -> None:
        super().__init__(f"recording {recording_id} is not available: {why}")
        self.recording_id = recording_id


@dataclass(frozen=True)
class Playback:
    recording_id: int
    path: Path
    call_id: str


def handled_call(session: Session, agent_id: int, call_id: str) -> bool:
    """The agent had a leg on the call (was offered and answered, or transferred it on)."""
    stmt = select(CallSegment.id).where(CallSegment.call_id == call_id, CallSegment.agent_id == agent_id,
                                        CallSegment.started_at.is_not(None)).limit(1)
    return session.scalar(stmt) is not None


def may_access_call(session: Session, agent: Agent, call_id: str) -> bool:
    if not agent.active:
        return False
    return agent.role in PRIVILEGED_ROLES or handled_call(session, agent.id, call_id)


def _audit(session: Session, agent: Agent, action: str, target: str, allowed: bool, **detail: object) -> None:
    session.add(AuditEntry(actor_agent_id=agent.id, actor=agent.login, action=action, target=target,
                           detail={"allowed": allowed, "role": agent.role, **detail}))
    session.flush()


def open_recording(session: Session, agent: Agent, recording_id: int) -> Playback:
    """Authorise and audit one playback; returns the file to stream (the caller commits the session)."""
    recording = session.get(Recording, recording_id)
    if recording is None:
        _audit(session, agent, "recording.play", f"recording:{recording_id}", False, why="not_found")
        raise AccessDenied(agent.id, "play recording", recording_id)
    if not may_access_call(session, agent, recording.call_id):
        _audit(session, agent, "recording.play", f"recording:{recording_id}", False,
               call_id=recording.call_id)
        raise AccessDenied(agent.id, "play recording", recording_id)
    _audit(session, agent, "recording.play", f"recording:{recording_id}", True, call_id=recording.call_id)
    path = Path(recording.path)
    if recording.purged_at is not None:
        raise RecordingUnavailable(recording_id, "purged by retention")
    if not path.is_file():
        raise RecordingUnavailable(recording_id, "file missing")
    return Playback(recording.id, path, recording.call_id)


def read_transcript(session: Session, agent: Agent, transcript_id: int) -> Transcript:
    """Authorise and audit reading one transcript."""
    transcript = session.get(Transcript, transcript_id)
    if transcript is None or not may_access_call(session, agent, transcript.call_id):
        _audit(session, agent, "transcript.read", f"transcript:{transcript_id}", False)
        raise AccessDenied(agent.id, "read transcript", transcript_id)
    _audit(session, agent, "transcript.read", f"transcript:{transcript_id}", True, call_id=transcript.call_id)
    return transcript
