"""PostgreSQL full-text (GIN) expression indexes for :mod:`recordings.search`.

Declared on the models so Alembic's autogenerate on PostgreSQL sees them (no drift), and guarded with
``ddl_if(dialect="postgresql")`` because SQLite searches its own FTS5 table instead (revision 0008
creates them on PostgreSQL only). The expression must stay exactly what the search query writes,
``to_tsvector('simple', <column>)``, or the planner cannot use the index. Autogenerate against
SQLite warns that it skips these expression indexes (SQLite cannot reflect them); that is expected,
and it is why they add no drift there.
"""

from __future__ import annotations

import sqlalchemy.dialects.postgresql  # noqa: F401 - registers to_tsvector's types before func.to_tsvector is built
from sqlalchemy import Index, func, literal_column, text

FTS_CONFIG = "simple"


def fts_index(name: str, column: str) -> Index:
    expression = func.to_tsvector(literal_column(f"'{FTS_CONFIG}'"), text(f'"{column}"'))
    return Index(name, expression, postgresql_using="gin").ddl_if(dialect="postgresql")
