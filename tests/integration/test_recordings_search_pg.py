"""Full-text search on a real PostgreSQL server: the same expectations as the SQLite FTS5 test."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tests.recordings_data import check_search, search_scenario


def test_search_postgresql(pg_engine: Engine) -> None:
    with Session(pg_engine) as session:
        rows = search_scenario(session)
        session.commit()
        check_search(session, rows)
