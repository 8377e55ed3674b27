"""Full-text search on SQLite (FTS5): transcripts and notes, prefix terms, filters."""

from __future__ import annotations

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from recordings.search import SearchFilters, rebuild_index, search
from tests.recordings_data import check_search, search_scenario


def test_search_sqlite(session: Session) -> None:
    rows = search_scenario(session)
    session.commit()
    check_search(session, rows)


def test_index_created_after_data_is_backfilled_and_rebuildable(session: Session, engine: Engine) -> None:
    search_scenario(session)
    session.commit()
    assert search(session, "환불")
    session.commit()
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM search_fts"))
    assert search(session, "환불", SearchFilters()) == []
    session.commit()
    rebuild_index(engine)
    assert len(search(session, "환불")) == 1
