"""Shared fixtures: settings on a temporary SQLite database, sessions, the demo data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from callcentre.settings import Settings, load_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    base = load_settings(env={})
    base = base.replace("database", url=f"sqlite:///{tmp_path / 'test.db'}")
    return base.replace("recordings", directory=str(tmp_path / "recordings"))


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    from callcentre.db.migrate import upgrade
    from callcentre.db.session import make_engine

    eng = make_engine(settings.database.url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    from callcentre.db.session import make_session_factory

    return make_session_factory(engine)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as s:
        yield s


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file with the demo data, built once per test session (hashing is slow)."""
    from callcentre.db.migrate import upgrade
    from callcentre.db.session import make_engine, make_session_factory, session_scope
    from callcentre.demo_data import load_demo_data

    path = tmp_path_factory.mktemp("demo") / "demo.db"
    eng = make_engine(f"sqlite:///{path}")
    upgrade(eng)
    with session_scope(make_session_factory(eng)) as session:
        load_demo_data(session)
    with eng.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    eng.dispose()
    return path


@pytest.fixture
def demo_settings(settings: Settings, demo_template: Path, tmp_path: Path) -> Settings:
    """Settings whose database is a private copy of the demo database."""
    import shutil

    target = tmp_path / "demo.db"
    shutil.copyfile(demo_template, target)
    return settings.replace("database", url=f"sqlite:///{target}")
