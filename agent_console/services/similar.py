"""'Similar resolved calls': the team's knowledge base, searched by the reason for calling.

Candidates are earlier calls marked resolved with the same IVR reason (or, when the reason is
unknown, any resolved call); they are ranked by how many words of this call's context they share
in their wrap-up notes and transcripts, then by recency. Plain word overlap is enough for the
size of one centre's history and needs no search engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from callcentre.db.models import Call, CallContextItem, Disposition, Transcript

_WORD = re.compile(r"[\w']{3,}", re.UNICODE)
_STOP = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "that",
        "this",
        "was",
        "are",
        "you",
        "your",
        "have",
        "has",
        "not",
        "but",
        "from",
        "they",
        "them",
    ]
)
CANDIDATES = 300


@dataclass(frozen=True)
class SimilarCall:
    call_id: str
    score: int
    reason: str
    disposition: str
    note: str
    transcript: str
    ended_at: str

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP}


def query_words(db: Session, call: Call) -> set[str]:
    """Words describing this call: its reason, what the caller said in the IVR (non-sensitive)."""
    texts = [call.reason.replace("_", " ")]
    for item in db.scalars(
        select(CallContextItem).where(CallContextItem.call_id == call.id, CallContextItem.sensitive.is_(False))
    ):
        if item.key in {"reason", "speech", "reason_text", "utterance", "intent"}:
            texts.append(item.value.replace("_", " "))
    return words(" ".join(texts))


def find_similar(db: Session, call: Call, limit: int = 5, text: str = "") -> list[SimilarCall]:
    wanted = query_words(db, call) | words(text)
    stmt = select(Call).where(Call.resolved.is_(True), Call.id != call.id)
    if call.reason:
        stmt = stmt.where(Call.reason == call.reason)
    candidates = list(db.scalars(stmt.order_by(Call.arrived_at.desc()).limit(CANDIDATES)))
    if not candidates:
        return []
    ids = [c.id for c in candidates]
    transcripts: dict[str, str] = {}
    for t in db.scalars(select(Transcript).where(Transcript.call_id.in_(ids))):
        transcripts[t.call_id] = (transcripts.get(t.call_id, "") + " " + t.text).strip()
    labels = dict(db.execute(select(Disposition.code, Disposition.label)).tuples().all())
    ranked: list[SimilarCall] = []
    for c in candidates:
        body = f"{c.wrap_up_note} {transcripts.get(c.id, '')}"
        overlap = len(wanted & words(body))
        if not call.reason and overlap == 0:
            continue
        # Same reason already matched; shared words and having any written solution rank higher.
        score = overlap * 10 + (5 if c.wrap_up_note.strip() else 0) + (1 if c.id in transcripts else 0)
        ranked.append(
            SimilarCall(
                call_id=c.id,
                score=score,
                reason=c.reason,
                disposition=labels.get(c.disposition, c.disposition),
                note=c.wrap_up_note[:400],
                transcript=transcripts.get(c.id, "")[:300],
                ended_at=(c.ended_at or c.arrived_at).isoformat(),
            )
        )
    ranked.sort(key=lambda s: (s.score, s.ended_at), reverse=True)
    # The same written solution found on many calls is one piece of knowledge: show it once.
    unique: list[SimilarCall] = []
    seen: set[str] = set()
    for found in ranked:
        text = _strip_login(found.note).lower().strip() or found.call_id
        if text not in seen:
            seen.add(text)
            unique.append(found)
    return unique[:limit]


def _strip_login(note: str) -> str:
    """Wrap-up notes start each line with ``[login]``; two agents writing the same solution match."""
    return re.sub(r"^\[[^\]]*\]\s*", "", note, flags=re.M)
