"""Retention: delete recording files older than a cut-off; keep the row, stamped ``purged_at``.

The row stays so the call history still says a recording existed, when it was purged and what its
checksum was; the transcript (already redacted) stays with the customer record. Every purge run that
deletes anything writes one audit entry with the count (ids only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from callcentre.db.base import utcnow
from callcentre.db.models import AuditEntry, Recording

_AGE = re.compile(r"^\s*(\d+)\s*([dhw]?)\s*$")
_UNITS = {"": "days", "d": "days", "h": "hours", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """``90d``, ``12w``, ``36h`` or a bare number of days → timedelta; anything else is refused."""
    match = _AGE.match(text.lower())
    if not match:
        raise ValueError(f"cannot read age {text!r}; use e.g. 90d, 12w or 36h")
    amount, unit = int(match.group(1)), match.group(2)
    return timedelta(**{_UNITS[unit]: amount})


@dataclass
class PurgeReport:
    cutoff: datetime
    dry_run: bool
    recording_ids: list[int] = field(default_factory=list)
    bytes_freed: int = 0
    missing_files: int = 0
    """Rows whose file was already gone (still stamped purged)."""

    @property
    def count(self) -> int:
        return len(self.recording_ids)


def purge(session: Session, older_than: timedelta, *, dry_run: bool = False, now: datetime | None = None,
          actor: str = "retention") -> PurgeReport:
    """Delete files of recordings whose call ended (or recording was made) before ``now - older_than``."""
    cutoff = (now or utcnow()) - older_than
    report = PurgeReport(cutoff=cutoff, dry_run=dry_run)
    rows = session.scalars(
        select(Recording).where(Recording.purged_at.is_(None), Recording.created_at < cutoff)
        .order_by(Recording.id)
    )
    stamp = utcnow()
    for recording in rows:
        path = Path(recording.path)
        size = path.stat().st_size if path.is_file() else 0
        report.recording_ids.append(recording.id)
        report.bytes_freed += size
        if not path.is_file():
            report.missing_files += 1
        if dry_run:
            continue
        path.unlink(missing_ok=True)
        recording.purged_at = stamp
    if not dry_run and report.count:
        session.add(AuditEntry(actor=actor, action="recordings.purge", target=f"{report.count} recordings",
                               detail={"cutoff": cutoff.isoformat(),
                                       "recording_ids": report.recording_ids[:1000],
                                       "bytes": report.bytes_freed}))
    session.flush()
    return report
