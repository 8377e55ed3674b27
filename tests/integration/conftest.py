"""Integration fixtures: a real PostgreSQL server for the whole session, a fresh database per test.

The server is Debian's PostgreSQL, started by :mod:`tests.pg` (skip on a laptop without it, fail
under CI). ``CALLCENTRE_TEST_POSTGRES_URL`` points at an existing server instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from tests.peers import require_binary, require_module
from tests.pg import ENV_URL, PostgresServer, create_database, drop_database, find_pg_bin


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """Superuser URL of a running PostgreSQL server (ours, or the one the environment names)."""
    require_module("psycopg")
    external = os.environ.get(ENV_URL)
    if external:
        yield external
        return
    require_binary("initdb", find_pg_bin("initdb"))
    server = PostgresServer().start()
    try:
        yield server.admin_url
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty database for one test; dropped afterwards."""
    url = create_database(postgres_admin_url)
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    """A migrated PostgreSQL database."""
    from callcentre.db.migrate import upgrade
    from callcentre.db.session import make_engine

    eng = make_engine(postgres_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of a migrated database, once on a SQLite file and once on the real PostgreSQL server."""
    from callcentre.db.migrate import upgrade
    from callcentre.db.session import make_engine

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    eng = make_engine(url)
    upgrade(eng)
    eng.dispose()
    return url


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    from callcentre.db.session import make_engine

    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def db_sessions(db_engine: Engine) -> sessionmaker[Session]:
    from callcentre.db.session import make_session_factory

    return make_session_factory(db_engine)
