"""``callcentre queues status``: operators see waiting calls, live reservations, miss streaks and
transfers, without any caller data in the output."""

from __future__ import annotations

import json

from click.testing import CliRunner
from sqlalchemy.orm import Session, sessionmaker

from callcentre.cli import main
from callcentre.settings import Settings
from routing import reservations as rsv
from routing.dispatcher import DispatcherConfig
from tests.integration.test_dispatcher import Platform, _seed


def test_queues_status_shows_places_reservations_and_misses(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    platform = Platform(session_factory, DispatcherConfig(policy=rsv.ReservationPolicy(15, 3)))
    (agent,) = _seed(platform.sessions, [4])
    ringing = platform.arrive("+15550301")
    platform.arrive("+15550302")
    platform.backend.agent_rejects(ringing)  # one miss; the other call is offered now
    url = settings.database.url
    result = CliRunner().invoke(main, ["--database", url, "queues", "status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["queues"]["billing"]["waiting"] == 1 and data["queues"]["billing"]["ringing"] == 1
    assert [r["agent_id"] for r in data["reservations"]] == [agent]
    assert data["miss_streaks"] == [{"agent_id": agent, "consecutive_misses": 1, "total_misses": 1, "state": "ringing"}]
    table = CliRunner().invoke(main, ["--database", url, "queues", "status"])
    assert table.exit_code == 0 and "billing" in table.output and "1 in a row" in table.output
    assert "+1555" not in table.output + result.output
