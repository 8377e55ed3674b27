"""Only the handling agent(s) and supervisors/admins may play recordings; every attempt is audited."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from callcentre.db.base import utcnow
from callcentre.db.models import AuditEntry, CallSegment, Recording, Transcript
from recordings.access import AccessDenied, RecordingUnavailable, open_recording, read_transcript
from tests.recordings_data import make_agent, make_call, tone_pcm, write_wav


def test_who_may_play(tmp_path: Path, session: Session) -> None:
    rows = make_call(session)
    admin = make_agent(session, "root", role="admin")
    path = write_wav(tmp_path / "r.wav", tone_pcm(0.2))
    rec = Recording(call_id=rows.call.id, path=str(path))
    session.add(rec)
    session.flush()

    for allowed in (rows.agent, rows.supervisor, admin):
        playback = open_recording(session, allowed, rec.id)
        assert playback.path == path
    with pytest.raises(AccessDenied):
        open_recording(session, rows.other_agent, rec.id)
    with pytest.raises(AccessDenied):
        open_recording(session, rows.other_agent, 999999)

    # An agent who only got offered the call (never answered) has no right to it either.
    session.add(CallSegment(call_id=rows.call.id, agent_id=rows.other_agent.id, end_reason="no_answer"))
    session.flush()
    with pytest.raises(AccessDenied):
        open_recording(session, rows.other_agent, rec.id)
    # ... but one who took it over by transfer does.
    session.add(CallSegment(call_id=rows.call.id, agent_id=rows.other_agent.id, started_at=utcnow()))
    session.flush()
    open_recording(session, rows.other_agent, rec.id)

    # A deactivated supervisor is refused.
    rows.supervisor.active = False
    with pytest.raises(AccessDenied):
        open_recording(session, rows.supervisor, rec.id)

    entries = session.scalars(select(AuditEntry).where(AuditEntry.action == "recording.play")
                              .order_by(AuditEntry.id)).all()
    assert [e.detail["allowed"] for e in entries] == [True, True, True, False, False, False, True, False]
    assert entries[0].actor_agent_id == rows.agent.id and entries[0].target == f"recording:{rec.id}"
    assert all("Kim" not in str(e.detail) for e in entries)  # ids only, no customer data


def test_purged_recording_is_unavailable_but_audited(tmp_path: Path, session: Session) -> None:
    rows = make_call(session)
    rec = Recording(call_id=rows.call.id, path=str(tmp_path / "gone.wav"), purged_at=utcnow())
    session.add(rec)
    session.flush()
    with pytest.raises(RecordingUnavailable, match="purged"):
        open_recording(session, rows.supervisor, rec.id)
    assert session.scalar(select(AuditEntry).where(AuditEntry.action == "recording.play")) is not None


def test_transcripts_follow_the_same_rule(session: Session) -> None:
    rows = make_call(session)
    transcript = Transcript(call_id=rows.call.id, text="요금 문의")
    session.add(transcript)
    session.flush()
    assert read_transcript(session, rows.agent, transcript.id).text == "요금 문의"
    with pytest.raises(AccessDenied):
        read_transcript(session, rows.other_agent, transcript.id)
    actions = session.scalars(select(AuditEntry.action)).all()
    assert actions == ["transcript.read", "transcript.read"]
