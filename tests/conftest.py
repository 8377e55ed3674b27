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
