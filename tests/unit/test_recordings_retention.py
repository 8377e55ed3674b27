"""Retention: old recording files are deleted (rows kept, marked), dry runs delete nothing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from callcentre.db.base import utcnow
from callcentre.db.models import AuditEntry, Recording, Transcript
from callcentre.settings import Settings
from recordings.retention import parse_age, purge
from tests.recordings_data import make_call, tone_pcm, write_wav


def _recordings(tmp_path: Path, factory: sessionmaker[Session]) -> dict[str, int]:
    ids = {}
    with factory() as session:
        rows = make_call(session)
        for name, age_days in (("old", 120), ("edge", 89), ("new", 1)):
            path = write_wav(tmp_path / f"{name}.wav", tone_pcm(0.2))
            rec = Recording(call_id=rows.call.id, path=str(path), created_at=utcnow() - timedelta(days=age_days))
            session.add(rec)
            session.flush()
            ids[name] = rec.id
        session.add(Transcript(call_id=rows.call.id, recording_id=ids["old"], text="요금 문의"))
        session.commit()
    return ids


def test_parse_age() -> None:
    assert parse_age("90d") == timedelta(days=90)
    assert parse_age("12w") == timedelta(weeks=12)
    assert parse_age("36h") == timedelta(hours=36)
    assert parse_age("30") == timedelta(days=30)
    with pytest.raises(ValueError, match="cannot read age"):
        parse_age("3 months")


def test_dry_run_then_purge(tmp_path: Path, session_factory: sessionmaker[Session]) -> None:
    ids = _recordings(tmp_path, session_factory)
    with session_factory() as session:
        report = purge(session, timedelta(days=90), dry_run=True)
        session.commit()
        assert report.recording_ids == [ids["old"]] and report.bytes_freed > 0
    assert (tmp_path / "old.wav").exists()
    with session_factory() as session:
        assert session.scalar(select(AuditEntry)) is None
        report = purge(session, timedelta(days=90))
        session.commit()
    assert report.recording_ids == [ids["old"]]
    assert not (tmp_path / "old.wav").exists()
    assert (tmp_path / "edge.wav").exists() and (tmp_path / "new.wav").exists()
    with session_factory() as session:
        old = session.get(Recording, ids["old"])
        assert old is not None and old.purged_at is not None  # row kept for the call history
        transcript = session.scalar(select(Transcript))
        assert transcript is not None and transcript.recording_id == ids["old"]  # transcript stays
        audit = session.scalar(select(AuditEntry).where(AuditEntry.action == "recordings.purge"))
        assert audit is not None and audit.detail["recording_ids"] == [ids["old"]]
        # A second run finds nothing more to do.
        assert purge(session, timedelta(days=90)).count == 0


def test_cli_purge(tmp_path: Path, session_factory: sessionmaker[Session], settings: Settings) -> None:
    from recordings.cli import recordings_group

    _recordings(tmp_path, session_factory)
    runner = CliRunner()
    out = runner.invoke(recordings_group, ["purge", "--older-than", "30d", "--dry-run"], obj=settings)
    assert out.exit_code == 0, out.output
    assert out.output.startswith("would delete 2 recording(s)")
    assert (tmp_path / "old.wav").exists() and (tmp_path / "edge.wav").exists()
    out = runner.invoke(recordings_group, ["purge", "--older-than", "30d"], obj=settings)
    assert out.output.startswith("deleted 2 recording(s)")
    assert not (tmp_path / "edge.wav").exists() and (tmp_path / "new.wav").exists()
    # Default age comes from settings (90 days): nothing older left.
    out = runner.invoke(recordings_group, ["purge"], obj=settings)
    assert out.output.startswith("deleted 0 recording(s)")
