"""Full-text search over transcripts and notes, with filters on customer, agent, reason and date.

Three kinds of document are searched: call transcripts (already redacted), wrap-up notes on calls
and the notes on customer records.

- **SQLite**: an FTS5 table ``search_fts`` kept current by triggers on ``transcripts``, ``calls`` and
  ``customers``. It is created on first use (:func:`ensure_index`, which also back-fills), not by a
  migration, because FTS5 virtual tables and their shadow tables are outside SQLAlchemy's metadata
  and would show up as drift in every autogenerate.
- **PostgreSQL**: ``to_tsvector('simple', …) @@ to_tsquery('simple', …)`` over the same three sources
  (``simple``: PostgreSQL ships no Korean dictionary, and Korean words take particles, so terms are
  matched as prefixes in both engines: ``요금`` finds ``요금이``). Each source is matched in its own
  branch with exactly the expression of its GIN index (revision 0008), so searches use the indexes.

Query text is reduced to word tokens (letters and digits); all must match, each as a prefix. No user
text is ever spliced into SQL: the FTS expression is passed as a bound parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 8

_SQLITE_SETUP = [
    """CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5(
        kind UNINDEXED, ref UNINDEXED, call_id UNINDEXED, body, tokenize = 'unicode61')""",
    """CREATE TRIGGER IF NOT EXISTS search_transcript_ai AFTER INSERT ON transcripts BEGIN
        INSERT INTO search_fts(kind, ref, call_id, body) VALUES ('transcript', new.id, new.call_id, new.text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS search_transcript_au AFTER UPDATE OF text ON transcripts BEGIN
        DELETE FROM search_fts WHERE kind = 'transcript' AND ref = old.id;
        INSERT INTO search_fts(kind, ref, call_id, body) VALUES ('transcript', new.id, new.call_id, new.text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS search_transcript_ad AFTER DELETE ON transcripts BEGIN
        DELETE FROM search_fts WHERE kind = 'transcript' AND ref = old.id;
    END""",
    """CREATE TRIGGER IF NOT EXISTS search_call_ai AFTER INSERT ON calls WHEN new.wrap_up_note != '' BEGIN
        INSERT INTO search_fts(kind, ref, call_id, body)
            VALUES ('call_note', new.id, new.id, new.wrap_up_note);
    END""",
    """CREATE TRIGGER IF NOT EXISTS search_call_au AFTER UPDATE OF wrap_up_note ON calls BEGIN
        DELETE FROM search_fts WHERE kind = 'call_note' AND ref = old.id;
        INSERT INTO search_fts(kind, ref, call_id, body)
            SELECT 'call_note', new.id, new.id, new.wrap_up_note WHERE new.wrap_up_note != '';
    END""",
    """CREATE TRIGGER IF NOT EXISTS search_call_ad AFTER DELETE ON calls BEGIN
        DELETE FROM search_fts WHERE kind = 'call_note' AND ref = old.id;
    END""",
    """CREATE TRIGGER IF NOT EXISTS search_customer_ai AFTER INSERT ON customers WHEN new.notes != '' BEGIN
        INSERT INTO search_fts(kind, ref, call_id, body) VALUES ('customer_note', new.id, NULL, new.notes);
    END""",
    """CREATE TRIGGER IF NOT EXISTS search_customer_au AFTER UPDATE OF notes ON customers BEGIN
        DELETE FROM search_fts WHERE kind = 'customer_note' AND ref = old.id;
        INSERT INTO search_fts(kind, ref, call_id, body)
            SELECT 'customer_note', new.id, NULL, new.notes WHERE new.notes != '';
    END""",
    """CREATE TRIGGER IF NOT EXISTS search_customer_ad AFTER DELETE ON customers BEGIN
        DELETE FROM search_fts WHERE kind = 'customer_note' AND ref = old.id;
    END""",
]

_SQLITE_BACKFILL = [
    "DELETE FROM search_fts",
    """INSERT INTO search_fts(kind, ref, call_id, body)
        SELECT 'transcript', id, call_id, text FROM transcripts WHERE text != ''""",
    """INSERT INTO search_fts(kind, ref, call_id, body)
        SELECT 'call_note', id, id, wrap_up_note FROM calls WHERE wrap_up_note != ''""",
    """INSERT INTO search_fts(kind, ref, call_id, body)
        SELECT 'customer_note', id, NULL, notes FROM customers WHERE notes != ''""",
]


@dataclass(frozen=True)
class SearchFilters:
    customer_id: int | None = None
    agent_id: int | None = None
    """Calls this agent handled (had a segment on)."""
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    kinds: tuple[str, ...] = ("transcript", "call_note", "customer_note")


@dataclass(frozen=True)
class SearchHit:
    kind: str
    """``transcript``, ``call_note`` or ``customer_note``."""
    ref: str
    """Transcript id, call id or customer id, by kind."""
    call_id: str | None
    customer_id: int | None
    snippet: str
    arrived_at: datetime | None


def terms(query: str) -> list[str]:
    return _WORD.findall(query)[:MAX_TERMS]


def ensure_index(bind: Engine | Connection) -> None:
    """Create the SQLite FTS index and its triggers if missing (back-filling once); no-op elsewhere."""
    if bind.dialect.name != "sqlite":
        return
    if isinstance(bind, Engine):
        with bind.begin() as connection:
            ensure_index(connection)
        return
    exists = bind.execute(text("SELECT 1 FROM sqlite_master WHERE name = 'search_fts'")).first()
    for statement in _SQLITE_SETUP:
        bind.exec_driver_sql(statement)
    if not exists:
        for statement in _SQLITE_BACKFILL:
            bind.exec_driver_sql(statement)


def rebuild_index(bind: Engine) -> None:
    """Re-fill the SQLite index from the tables (after a restore or bulk import that bypassed triggers)."""
    if bind.dialect.name != "sqlite":
        return
    with bind.begin() as connection:
        ensure_index(connection)
        for statement in _SQLITE_BACKFILL:
            connection.exec_driver_sql(statement)


def search(session: Session, query: str, filters: SearchFilters | None = None, *,
           limit: int = 50) -> list[SearchHit]:
    """Documents matching every word of ``query`` (as prefixes), newest call first."""
    filters = filters or SearchFilters()
    words = terms(query)
    if not words or not filters.kinds:
        return []
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        ensure_index(connection)
        return _search_sqlite(session, words, filters, limit)
    if connection.dialect.name == "postgresql":
        return _search_postgresql(session, words, filters, limit)
    raise ValueError(f"full-text search supports sqlite and postgresql, not {connection.dialect.name}")


def _filter_sql(filters: SearchFilters, params: dict[str, Any], call: str, customer: str) -> str:
    clauses: list[str] = []
    kinds = []
    for n, kind in enumerate(filters.kinds):
        params[f"kind{n}"] = kind
        kinds.append(f":kind{n}")
    clauses.append(f"d.kind IN ({', '.join(kinds)})")
    if filters.customer_id is not None:
        params["customer_id"] = filters.customer_id
        clauses.append(f"{customer} = :customer_id")
    if filters.agent_id is not None:
        params["agent_id"] = filters.agent_id
        clauses.append(f"EXISTS (SELECT 1 FROM call_segments s WHERE s.call_id = {call}.id "
                       "AND s.agent_id = :agent_id)")
    if filters.reason:
        params["reason"] = filters.reason
        clauses.append(f"{call}.reason = :reason")
    if filters.since is not None:
        params["since"] = filters.since
        clauses.append(f"{call}.arrived_at >= :since")
    if filters.until is not None:
        params["until"] = filters.until
        clauses.append(f"{call}.arrived_at < :until")
    return " AND ".join(clauses)


def _hit(row: Any) -> SearchHit:
    arrived = row.arrived_at
    if isinstance(arrived, str):  # raw SQL on SQLite returns the stored text
        from callcentre.db.base import UTCDateTime

        arrived = UTCDateTime().process_result_value(datetime.fromisoformat(arrived), None)  # type: ignore[arg-type]
    return SearchHit(row.kind, str(row.ref), row.call_id, row.customer_id, row.snippet, arrived)


def _search_sqlite(session: Session, words: list[str], filters: SearchFilters, limit: int) -> list[SearchHit]:
    # Each word quoted (so FTS operators in user text are inert) and matched as a prefix.
    match = " AND ".join('"' + w.replace('"', '""') + '"*' for w in words)
    params: dict[str, Any] = {"match": match, "limit": limit}
    where = _filter_sql(filters, params, "c", "COALESCE(c.customer_id, cu.id)")
    sql = f"""
        SELECT d.kind AS kind, d.ref AS ref, d.call_id AS call_id,
               COALESCE(c.customer_id, cu.id) AS customer_id, c.arrived_at AS arrived_at,
               snippet(search_fts, 3, '[', ']', '…', 12) AS snippet
        FROM search_fts d
        LEFT JOIN calls c ON c.id = d.call_id
        LEFT JOIN customers cu ON d.kind = 'customer_note' AND cu.id = CAST(d.ref AS INTEGER)
        WHERE search_fts MATCH :match AND {where}
        ORDER BY c.arrived_at IS NULL, c.arrived_at DESC, d.kind, d.rank
        LIMIT :limit"""
    return [_hit(row) for row in session.execute(text(sql), params)]


_PG_SOURCES = {
    # kind → one SELECT over its table; each matches ``to_tsvector('simple', <column>)``, exactly the
    # expression of its GIN index (revision 0008, callcentre.db.models.fts), so the planner can use it.
    "transcript": """SELECT 'transcript' AS kind, CAST(t.id AS TEXT) AS ref, t.call_id AS call_id,
                            t.text AS body
                     FROM transcripts t
                     WHERE to_tsvector('simple', t.text) @@ to_tsquery('simple', :q) AND t.text != ''""",
    "call_note": """SELECT 'call_note' AS kind, c2.id AS ref, c2.id AS call_id, c2.wrap_up_note AS body
                    FROM calls c2
                    WHERE to_tsvector('simple', c2.wrap_up_note) @@ to_tsquery('simple', :q)
                      AND c2.wrap_up_note != ''""",
    "customer_note": """SELECT 'customer_note' AS kind, CAST(cu2.id AS TEXT) AS ref, NULL AS call_id,
                               cu2.notes AS body
                        FROM customers cu2
                        WHERE to_tsvector('simple', cu2.notes) @@ to_tsquery('simple', :q)
                          AND cu2.notes != ''""",
}


def postgresql_search_sql(words: list[str], filters: SearchFilters, limit: int) -> tuple[str, dict[str, Any]]:
    """The statement and parameters of a PostgreSQL search (``EXPLAIN`` in the tests reads it)."""
    # to_tsquery syntax is built from \w tokens only, each quoted as a lexeme with a prefix marker.
    tsquery = " & ".join("'" + w.replace("'", "''") + "':*" for w in words)
    params: dict[str, Any] = {"q": tsquery, "limit": limit}
    where = _filter_sql(filters, params, "c", "COALESCE(c.customer_id, cu.id)")
    # The match is inside each branch (not on the union), one branch per requested kind.
    branches = "\n            UNION ALL\n".join(_PG_SOURCES[k] for k in _PG_SOURCES if k in filters.kinds)
    sql = f"""
        WITH d AS (
            {branches}
        )
        SELECT d.kind AS kind, d.ref AS ref, d.call_id AS call_id,
               COALESCE(c.customer_id, cu.id) AS customer_id, c.arrived_at AS arrived_at,
               ts_headline('simple', d.body, to_tsquery('simple', :q),
                           'StartSel=[,StopSel=],MaxWords=12,MinWords=3') AS snippet
        FROM d
        LEFT JOIN calls c ON c.id = d.call_id
        LEFT JOIN customers cu ON d.kind = 'customer_note' AND CAST(cu.id AS TEXT) = d.ref
        WHERE {where}
        ORDER BY c.arrived_at DESC NULLS LAST, d.kind, d.ref
        LIMIT :limit"""
    return sql, params


def _search_postgresql(session: Session, words: list[str], filters: SearchFilters,
                       limit: int) -> list[SearchHit]:
    if not any(k in _PG_SOURCES for k in filters.kinds):
        return []
    sql, params = postgresql_search_sql(words, filters, limit)
    return [_hit(row) for row in session.execute(text(sql), params)]
