"""recordings search: GIN expression indexes for PostgreSQL full-text search

``to_tsvector('simple', <column>)`` on transcripts.text, calls.wrap_up_note and customers.notes, the
exact expressions :func:`recordings.search._search_postgresql` matches against, so a search reads the
index instead of scanning every row. PostgreSQL only: SQLite searches its FTS5 table
(``recordings.search.ensure_index``), so this revision does nothing there.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 23:30:00
"""
from __future__ import annotations

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_transcripts_text_fts", "transcripts", "text"),
    ("ix_calls_wrap_up_note_fts", "calls", "wrap_up_note"),
    ("ix_customers_notes_fts", "customers", "notes"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, table, column in INDEXES:
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin (to_tsvector('simple', \"{column}\"))")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, _table, _column in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
