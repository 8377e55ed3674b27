"""The Alembic history builds exactly the schema the models declare (no drift, no second head)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from callcentre.db.base import Base
from callcentre.db.migrate import current_heads, upgrade


def test_single_head() -> None:
    assert len(current_heads()) == 1, current_heads()


def test_migrations_match_models(engine: Engine) -> None:
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent(engine: Engine) -> None:
    before = sorted(inspect(engine).get_table_names())
    upgrade(engine)
    assert sorted(inspect(engine).get_table_names()) == before
    assert {"calls", "call_context", "call_segments", "agents", "customers"} <= set(before)
