"""PostgreSQL full-text search reads GIN expression indexes (revision 0008) on the real server.

The indexes exist after ``upgrade``, the model declarations match them (no autogenerate drift on
PostgreSQL), the planner picks them for a search over thousands of rows, and the restructured
statement finds exactly what the previous one (a match on the union of all three sources, which no
index could serve) found, kept here verbatim as the reference.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from callcentre.db.base import Base, utcnow
from callcentre.db.migrate import alembic_config, upgrade
from callcentre.db.models import Call, Customer, Transcript
from recordings.search import SearchFilters, _filter_sql, postgresql_search_sql, search, terms
from tests.recordings_data import check_search, search_scenario

INDEXES = {
    "ix_transcripts_text_fts": ("transcripts", "text"),
    "ix_calls_wrap_up_note_fts": ("calls", "wrap_up_note"),
    "ix_customers_notes_fts": ("customers", "notes"),
}
WORDS = ["요금", "요금제", "환불", "인터넷", "모뎀", "재부팅", "주소", "변경", "해지", "bill", "billing", "router",
         "refund", "address", "VIP", "고객", "안내", "완료"]


def _old_statement(words: list[str], filters: SearchFilters, limit: int) -> tuple[str, dict[str, Any]]:
    """The search statement before revision 0008 (the match applied to the union)."""
    tsquery = " & ".join("'" + w.replace("'", "''") + "':*" for w in words)
    params: dict[str, Any] = {"q": tsquery, "limit": limit}
    where = _filter_sql(filters, params, "c", "COALESCE(c.customer_id, cu.id)")
    sql = f"""
        WITH d AS (
            SELECT 'transcript' AS kind, CAST(t.id AS TEXT) AS ref, t.call_id AS call_id, t.text AS body
                FROM transcripts t WHERE t.text != ''
            UNION ALL
            SELECT 'call_note', c2.id, c2.id, c2.wrap_up_note FROM calls c2 WHERE c2.wrap_up_note != ''
            UNION ALL
            SELECT 'customer_note', CAST(cu2.id AS TEXT), NULL, cu2.notes
                FROM customers cu2 WHERE cu2.notes != ''
        )
        SELECT d.kind AS kind, d.ref AS ref, d.call_id AS call_id,
               COALESCE(c.customer_id, cu.id) AS customer_id, c.arrived_at AS arrived_at,
               ts_headline('simple', d.body, to_tsquery('simple', :q),
                           'StartSel=[,StopSel=],MaxWords=12,MinWords=3') AS snippet
        FROM d
        LEFT JOIN calls c ON c.id = d.call_id
        LEFT JOIN customers cu ON d.kind = 'customer_note' AND CAST(cu.id AS TEXT) = d.ref
        WHERE to_tsvector('simple', d.body) @@ to_tsquery('simple', :q) AND {where}
        ORDER BY c.arrived_at DESC NULLS LAST, d.kind, d.ref
        LIMIT :limit"""
    return sql, params


def _fill(session: Session, n: int, seed: int = 7) -> list[int]:
    """``n`` customers, calls and transcripts of random words (a rare word on a few rows)."""
    rng = random.Random(seed)

    def sentence(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    now = utcnow()
    customers = [{"name": f"C{i}", "account_number": f"IDX{i:06d}",
                  "notes": sentence(4) if i % 3 else ""} for i in range(n)]
    session.execute(insert(Customer), customers)
    ids = list(session.scalars(text("SELECT id FROM customers WHERE account_number LIKE 'IDX%' ORDER BY id")))
    calls = [{"id": f"call-idx{i:06d}", "caller_id": "+8210", "customer_id": ids[i], "reason": rng.choice(
        ["billing", "technical"]), "wrap_up_note": sentence(5) if i % 2 else "",
        "arrived_at": now - timedelta(minutes=i)} for i in range(n)]
    for i in (11, 222, n - 5):  # the rare word, on a handful of rows of each table
        calls[i]["wrap_up_note"] += " 희귀단어"
        customers_note = f"희귀단어 {sentence(2)}"
        session.execute(text("UPDATE customers SET notes = :n WHERE id = :id"), {"n": customers_note, "id": ids[i]})
    session.execute(insert(Call), calls)
    session.execute(insert(Transcript), [
        {"call_id": c["id"], "text": f"caller: {sentence(12)}\nagent: {sentence(8)}"
         + (" 희귀단어이" if i in (5, 333) else "")} for i, c in enumerate(calls)])
    session.commit()
    session.execute(text("ANALYZE customers; ANALYZE calls; ANALYZE transcripts"))
    return ids


def _plan(session: Session, query: str, filters: SearchFilters | None = None) -> str:
    sql, params = postgresql_search_sql(terms(query), filters or SearchFilters(), 50)
    return "\n".join(session.scalars(text("EXPLAIN " + sql), params))


def _fts_indexes(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        return dict(connection.execute(text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE 'ix_%_fts'")).tuples().all())


def test_gin_indexes_exist_and_models_match(pg_engine: Engine) -> None:
    found = _fts_indexes(pg_engine)
    assert set(found) == set(INDEXES)
    for name, (table, column) in INDEXES.items():
        assert f"ON public.{table} USING gin (to_tsvector('simple'::regconfig, {column}))" in found[name]
    with pg_engine.connect() as connection:
        # The whole schema, not only these indexes: autogenerate on PostgreSQL would write nothing.
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    with Session(pg_engine) as session:
        _fill(session, 300)
        session.execute(text("SET enable_seqscan = off"))
        assert "Bitmap Index Scan on ix_transcripts_text_fts" in _plan(session, "요금")
    command.downgrade(alembic_config(pg_engine), "0007")
    assert _fts_indexes(pg_engine) == {}
    with Session(pg_engine) as session:  # before 0008 nothing but a scan can answer, however priced
        session.execute(text("SET enable_seqscan = off"))
        plan = _plan(session, "요금")
        assert "Seq Scan on transcripts" in plan and "Index Scan on ix_" not in plan
    upgrade(pg_engine)
    assert set(_fts_indexes(pg_engine)) == set(INDEXES)


def test_search_uses_the_indexes_on_thousands_of_rows(pg_engine: Engine) -> None:
    with Session(pg_engine) as session:
        _fill(session, 3000)
        # Planner's own choice on realistic statistics: a rare word goes through every index.
        plan = _plan(session, "희귀단어")
        for name in INDEXES:
            assert f"Bitmap Index Scan on {name}" in plan, plan
        assert "Seq Scan on transcripts" not in plan, plan
        # A common word may rightly be read by a scan; with scans priced out, the indexes still serve it.
        session.execute(text("SET enable_seqscan = off"))
        plan = _plan(session, "요금 변경", SearchFilters(reason="billing"))
        for name in INDEXES:
            assert f"on {name}" in plan, plan
        session.execute(text("RESET enable_seqscan"))
        hits = search(session, "희귀단어")
        assert {h.kind for h in hits} == {"transcript", "call_note", "customer_note"}
        assert len(hits) == 2 + 3 + 3


def test_results_are_unchanged_against_the_previous_statement(pg_engine: Engine) -> None:
    with Session(pg_engine) as session:
        _fill(session, 600, seed=3)
        now = utcnow()
        queries = ["요금", "요금 변경", "bill", "refund address", "희귀단어", "VIP 고객", "없는말", "인터"]
        cases = [(q, f) for q in queries
                 for f in [SearchFilters(), SearchFilters(reason="technical"), SearchFilters(kinds=("call_note",)),
                           SearchFilters(kinds=("customer_note", "transcript")),
                           SearchFilters(since=now - timedelta(hours=3), until=now - timedelta(hours=1))]]
        compared = 0
        for query, filters in cases:
            for limit in (20, 5000):
                new_sql, new_params = postgresql_search_sql(terms(query), filters, limit)
                old_sql, old_params = _old_statement(terms(query), filters, limit)
                new = session.execute(text(new_sql), new_params).all()
                old = session.execute(text(old_sql), old_params).all()
                assert new == old, (query, filters, limit)
                compared += len(old)
        assert compared > 1000  # the comparison covered real hits, not only empty answers


def test_scenario_still_passes(pg_engine: Engine) -> None:
    with Session(pg_engine) as session:
        rows = search_scenario(session)
        session.commit()
        check_search(session, rows)
