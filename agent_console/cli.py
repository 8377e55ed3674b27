"""``callcentre demo``: the whole platform on the in-memory backend with simulated callers and
agents, so a newcomer sees queues move within a minute and can take calls in the browser."""

from __future__ import annotations

import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click

HUMAN_AGENTS = ("agent01", "agent02")


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}", param_hint="--http")
    return host, int(port)


@click.command()
@click.option("--http", "http", default=None, help="Console address HOST:PORT (default from settings; port 0 = any).")
@click.option("--database", default=None, help="SQLAlchemy URL (default: a fresh SQLite file in a temp folder).")
@click.option("--calls-per-minute", default=8.0, show_default=True, type=click.FloatRange(0.1, 600))
@click.option(
    "--max-calls",
    default=500,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Simulated callers stop after this many calls.",
)
@click.option(
    "--human",
    default=",".join(HUMAN_AGENTS),
    show_default=True,
    help="Agent logins left for people in the browser (comma-separated); the rest are simulated.",
)
@click.option("--duration", default=0.0, type=click.FloatRange(0), help="Stop after N seconds (0 = until Ctrl-C).")
@click.option("--seed", default=1, show_default=True, help="Random seed of the simulated callers and agents.")
@click.pass_obj
def demo(
    obj: Any,
    http: str | None,
    database: str | None,
    calls_per_minute: float,
    max_calls: int,
    human: str,
    duration: float,
    seed: int,
) -> None:
    """Run a demo centre: memory backend, simulated callers and agents, console and wallboard."""
    from sqlalchemy import select

    from agent_console.app import create_app
    from agent_console.context import EXTENSION_KEY
    from agent_console.serving import serve_in_thread
    from agent_console.simulation import Scheduler, SimulatedAgents, SimulatedCallers
    from callcentre.bootstrap import build_platform
    from callcentre.db.base import utcnow
    from callcentre.db.models import Agent
    from callcentre.db.session import session_scope
    from callcentre.demo_data import AGENT_PASSWORD, STAFF, demo_customer, load_demo_data
    from callcentre.domain.events import AgentStateChanged

    settings = obj.settings
    workdir = Path(tempfile.mkdtemp(prefix="callcentre-demo-"))
    settings = settings.replace("database", url=database or f"sqlite:///{workdir / 'demo.db'}")
    settings = settings.replace("recordings", directory=str(workdir / "recordings"))
    if http:
        host, port = _host_port(http)
        settings = settings.replace("http", host=host, port=port)

    platform = build_platform(settings, "memory")
    with session_scope(platform.session_factory) as db:
        summary = load_demo_data(db)
    dispatcher = platform.services.get("dispatcher")
    if dispatcher is None:
        from routing.dispatcher import Dispatcher

        dispatcher = Dispatcher(platform.bus, platform.backend, platform.session_factory).subscribe()
        platform.services["dispatcher"] = dispatcher
    platform.start()
    if hasattr(dispatcher, "start"):
        dispatcher.start()

    humans = {h.strip() for h in human.split(",") if h.strip()}
    with session_scope(platform.session_factory) as db:
        agents = list(db.scalars(select(Agent).where(Agent.role == "agent", Agent.active.is_(True))))
        simulated = {a.id for a in agents if a.login not in humans}
        people = sorted(a.login for a in agents if a.login in humans)
        for a in agents:
            a.state, a.state_reason = ("available", "") if a.id in simulated else ("not_ready", "break")
            a.state_since = utcnow()
    app = create_app(settings, platform=platform)
    console = app.extensions[EXTENSION_KEY]
    stop = threading.Event()
    scheduler = Scheduler(stop)
    customers = [demo_customer(n) for n in range(1, summary.customers + 1)]
    callers = SimulatedCallers(
        platform.backend,
        platform.bus,
        scheduler,
        customers,
        per_minute=calls_per_minute,
        max_calls=max_calls,
        seed=seed,
    )
    SimulatedAgents(console.actions, platform.bus, scheduler, simulated, backend=platform.backend, seed=seed + 1)
    running = serve_in_thread(app, settings.http.host, settings.http.port)
    for agent_id in simulated:  # tell the dispatcher they are free
        platform.bus.publish(AgentStateChanged(agent_id, "available"))
    scheduler.start()
    callers.start()

    click.echo(f"callcentre demo: console on {running.url}/  (database {settings.database.url})")
    click.echo(
        f"  {len(simulated)} simulated agents, about {calls_per_minute:g} simulated calls a minute "
        f"(at most {max_calls})"
    )
    for login in people:
        click.echo(f"  agent       {login:<11} password {AGENT_PASSWORD}  (press Available to take calls)")
    for login, _name, role, password in STAFF:
        click.echo(f"  {role:<11} {login:<11} password {password}")
    click.echo("  Ctrl-C stops the demo.")

    finished = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: finished.set())
    deadline = time.monotonic() + duration if duration else None
    try:
        while not finished.wait(0.5):
            if deadline is not None and time.monotonic() >= deadline:
                break
    except KeyboardInterrupt:
        pass
    finally:
        click.echo(f"callcentre demo: stopping after {callers.placed} calls")
        scheduler.join()
        running.stop()
        platform.stop()
