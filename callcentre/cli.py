"""The ``callcentre`` command."""

from __future__ import annotations

import json
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from callcentre.settings import Settings, SettingsError, load_settings


class Ctx:
    def __init__(self, config: str | None) -> None:
        self.config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config)
            except SettingsError as exc:
                raise click.ClickException(str(exc)) from exc
        return self._settings

    def override(self, section: str, **changes: Any) -> None:
        self._settings = self.settings.replace(section, **changes)


pass_ctx = click.make_pass_decorator(Ctx)


@click.group()
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
              help="TOML config file (default: $CALLCENTRE_CONFIG).")
@click.option("--database", "database", default=None, help="SQLAlchemy URL (default: $CALLCENTRE_DATABASE_URL).")
@click.pass_context
def main(ctx: click.Context, config: str | None, database: str | None) -> None:
    """callcentre: IVR, skills-based routing, agent console."""
    ctx.obj = Ctx(config)
    if database:
        ctx.obj.override("database", url=database)


def _host_port(value: str, what: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"{what} must be HOST:PORT, got {value!r}")
    return host, int(port)


def _engine(ctx: Ctx) -> Any:
    from callcentre.db.migrate import upgrade
    from callcentre.db.session import make_engine

    engine = make_engine(ctx.settings.database.url)
    upgrade(engine)
    return engine


# -- serve --------------------------------------------------------------------------------------


@main.command()
@click.option("--http", "http", default=None, help="Console address HOST:PORT (default 127.0.0.1:8080).")
@click.option("--sip", "sip", default=None, help="SIP endpoint address HOST:PORT (default 127.0.0.1:5060).")
@click.option("--database", "database", default=None, help="SQLAlchemy URL.")
@click.option("--backend", type=click.Choice(["sip", "memory", "asterisk", "twilio"]), default="sip",
              show_default=True, help="Telephony backend.")
@pass_ctx
def serve(ctx: Ctx, http: str | None, sip: str | None, database: str | None, backend: str) -> None:
    """Run the platform: telephony backend, IVR, router and console."""
    from callcentre.bootstrap import build_platform

    if database:
        ctx.override("database", url=database)
    if http:
        host, port = _host_port(http, "--http")
        ctx.override("http", host=host, port=port)
    if sip:
        host, port = _host_port(sip, "--sip")
        ctx.override("sip", host=host, port=port)
    settings = ctx.settings
    try:
        platform = build_platform(settings, backend)
    except ImportError as exc:
        raise click.ClickException(f"the {backend} backend is not available: {exc}") from exc
    platform.start()
    stopping = threading.Event()

    def _stop(*_: Any) -> None:
        stopping.set()

    # Ctrl-C and SIGTERM only set the event: a KeyboardInterrupt raised inside Event.wait can leave
    # its lock broken ("release unlocked lock") instead of stopping cleanly.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    click.echo(f"callcentre: {backend} backend up; database {settings.database.url}")
    if backend == "sip":
        click.echo(f"callcentre: SIP on {settings.sip.host}:{settings.sip.port} (dial {settings.sip.numbers})")
    try:
        _serve_console(platform, stopping)
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("callcentre: ending calls and stopping")
        platform.stop()


def _serve_console(platform: Any, stopping: threading.Event) -> None:
    from agent_console.app import create_app
    from agent_console.serving import serve_in_thread

    settings = platform.settings
    running = serve_in_thread(create_app(settings, platform=platform), settings.http.host, settings.http.port,
                              quiet=False)
    click.echo(f"callcentre: console on {running.url}/")
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        running.stop()


# -- config ------------------------------------------------------------------------------------


@main.group()
def config() -> None:
    """Settings."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of TOML.")
@pass_ctx
def config_show(ctx: Ctx, as_json: bool) -> None:
    """Print the effective settings (defaults → config file → environment), secrets masked."""
    data = ctx.settings.as_dict(mask_secrets=True)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        import tomli_w

        click.echo(tomli_w.dumps(data), nl=False)


# -- database ----------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(ctx: Ctx) -> None:
    """Apply every migration (creates the database on first use)."""
    engine = _engine(ctx)
    engine.dispose()
    click.echo(f"database at {engine.url.render_as_string(hide_password=True)} is up to date")


@main.command("demo-data")
@pass_ctx
def demo_data(ctx: Ctx) -> None:
    """Load the demo queues, skills, agents and customers (safe to run again)."""
    from callcentre.db.session import make_session_factory, session_scope
    from callcentre.demo_data import load_demo_data

    engine = _engine(ctx)
    with session_scope(make_session_factory(engine)) as session:
        summary = load_demo_data(session)
    engine.dispose()
    click.echo(f"demo data: {summary.queues} queues, {summary.skills} skills, {summary.agents} staff, "
               f"{summary.customers} customers ({summary.calls} history calls added)")


# -- IVR ---------------------------------------------------------------------------------------


@main.group()
def ivr() -> None:
    """IVR flows."""


@ivr.command("check")
@click.argument("flow_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--prompts", "prompts_dir", type=click.Path(file_okay=False), default=None,
              help="Also check every prompt has a recording here.")
def ivr_check(flow_file: str, prompts_dir: str | None) -> None:
    """Validate a flow file; errors name the step."""
    from ivr.flow import FlowError, load_flow

    try:
        flow = load_flow(flow_file)
    except FlowError as exc:
        raise click.ClickException(str(exc)) from exc
    if prompts_dir:
        missing = [pid for pid in flow.prompts if not (Path(prompts_dir) / f"{pid}.wav").exists()]
        if missing:
            raise click.ClickException(f"{flow_file}: prompts without a recording in {prompts_dir}: "
                                       f"{', '.join(missing)} (run: callcentre prompts build)")
    click.echo(f"{flow_file}: flow {flow.name!r} is valid ({len(flow.steps)} steps, {len(flow.prompts)} prompts)")


@ivr.command("try")
@click.argument("flow_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--caller-id", default="", help="Caller ID to present.")
@click.option("--with-database", is_flag=True, help="Identify callers against the configured database.")
@pass_ctx
def ivr_try(ctx: Ctx, flow_file: str, caller_id: str, with_database: bool) -> None:
    """Walk a flow in the terminal: type digits (Enter alone = silence, 'say TEXT' = speech, 'q' = hang up)."""
    from ivr.actions import TERMINAL_ACTIONS, Gather
    from ivr.engine import CustomerDirectory, IvrEngine, NoCustomers
    from ivr.flow import FlowError, load_flow
    from ivr.state import CallInfo, DigitsInput, IvrInput, NoInput, SpeechInput

    try:
        flow = load_flow(flow_file)
    except FlowError as exc:
        raise click.ClickException(str(exc)) from exc
    directory: CustomerDirectory = NoCustomers()
    if with_database:
        from callcentre.db.session import make_session_factory
        from callcentre.directory import DatabaseDirectory

        directory = DatabaseDirectory(make_session_factory(_engine(ctx)))
    engine = IvrEngine(flow, directory)
    state, action = engine.start(CallInfo("call-try", caller_id, "1000", datetime.now(UTC)))
    while True:
        for prompt in action.prompts:
            click.echo(f"  ♪ {prompt.text}")
        if isinstance(action, TERMINAL_ACTIONS):
            details = {k: v for k, v in vars(action).items() if k not in ("prompts", "context")}
            click.echo(f"→ {type(action).__name__} {details}")
            click.echo(f"  context: {state.context.as_dict()}")
            return
        assert isinstance(action, Gather)
        hint = f"{action.min_digits}-{action.max_digits} digits" + (
            f", end with {action.terminator}" if action.terminator else "")
        try:
            line = click.prompt(f"[{state.step}] keys ({hint})", default="", show_default=False)
        except (EOFError, click.Abort):
            line = "q"
        if line.strip() == "q":
            click.echo(f"→ caller hung up at step {state.step!r}")
            return
        inp: IvrInput
        if line.startswith("say "):
            inp = SpeechInput(line[4:], 1.0)
        elif line.strip():
            inp = DigitsInput(line.strip())
        else:
            inp = NoInput()
        state, action = engine.step(state, inp)


# -- prompts -----------------------------------------------------------------------------------


@main.group()
def prompts() -> None:
    """Recorded IVR prompts."""


@prompts.command("build")
@click.option("--flow", "flow_files", type=click.Path(exists=True, dir_okay=False), multiple=True,
              help="Flow file(s); default: every flow beside the configured one, plus the queue announcements.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None)
@click.option("--voice", default="en-us", show_default=True, help="espeak-ng voice.")
@click.option("--force", is_flag=True, help="Rebuild every prompt, not only changed ones.")
@pass_ctx
def prompts_build(ctx: Ctx, flow_files: tuple[str, ...], out_dir: str | None, voice: str, force: bool) -> None:
    """Speak the flows' prompts with espeak-ng into 8 kHz WAV files (only changed ones)."""
    from callcentre.bootstrap import flow_path, prompts_dir
    from callcentre.prompt_catalogue import PromptConflict, flows_beside, prompt_texts
    from ivr.flow import FlowError
    from ivr.prompts import PromptBuildError, build_prompts

    paths = [Path(f) for f in flow_files] or flows_beside(flow_path(ctx.settings))
    try:
        texts = prompt_texts(paths)
    except (FlowError, PromptConflict) as exc:
        raise click.ClickException(str(exc)) from exc
    target = Path(out_dir) if out_dir else prompts_dir(ctx.settings)
    try:
        built = build_prompts(texts, target, voice=voice, force=force)
    except PromptBuildError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{len(built)} prompt(s) built in {target}; {len(texts) - len(built)} unchanged")


# -- calls -------------------------------------------------------------------------------------


@main.group()
def calls() -> None:
    """Calls and what the IVR collected."""


def call_as_dict(call: Any) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": call.id, "backend": call.backend, "caller_id": call.caller_id, "dialled": call.dialled_number,
        "state": call.state, "customer_id": call.customer_id, "queue_id": call.queue_id, "reason": call.reason,
        "required_skills": call.required_skills, "priority": call.priority, "language": call.language,
        "unidentified": call.unidentified, "arrived_at": iso(call.arrived_at), "queued_at": iso(call.queued_at),
        "answered_at": iso(call.answered_at), "ended_at": iso(call.ended_at), "outcome": call.outcome,
        "ended_at_step": call.ended_at_step, "disposition": call.disposition, "resolved": call.resolved,
        "route_why": call.route_why,
        "context": [{"key": i.key, "value": i.value, "step": i.step, "verified": i.verified,
                     "sensitive": i.sensitive, "collected_at": iso(i.collected_at)} for i in call.context_items],
        "segments": [{"agent_id": s.agent_id, "queue_id": s.queue_id, "offered_at": iso(s.offered_at),
                      "started_at": iso(s.started_at), "ended_at": iso(s.ended_at), "end_reason": s.end_reason,
                      "transfer_kind": s.transfer_kind, "transfer_reason": s.transfer_reason,
                      "transfer_note": s.transfer_note, "transfer_target": s.transfer_target}
                     for s in call.segments],
    }


@calls.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=50, show_default=True)
@pass_ctx
def calls_list(ctx: Ctx, as_json: bool, limit: int) -> None:
    """Most recent calls first."""
    from sqlalchemy.orm import Session

    from callcentre.db.models import Call

    engine = _engine(ctx)
    with Session(engine) as session:
        rows = session.scalars(select(Call).order_by(Call.arrived_at.desc()).limit(limit)).all()
        if as_json:
            click.echo(json.dumps([{"id": c.id, "state": c.state, "reason": c.reason, "outcome": c.outcome,
                                    "arrived_at": c.arrived_at.isoformat()} for c in rows], indent=2))
        else:
            for c in rows:
                click.echo(f"{c.id}  {c.arrived_at:%Y-%m-%d %H:%M:%S}  {c.state:<12} {c.reason:<10} {c.outcome}")
    engine.dispose()


@calls.command("show")
@click.argument("call_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def calls_show(ctx: Ctx, call_id: str, as_json: bool) -> None:
    """One call with its context, segments and outcome."""
    from sqlalchemy.orm import Session

    from callcentre.db.models import Call

    engine = _engine(ctx)
    with Session(engine) as session:
        call = session.scalar(select(Call).where(Call.id == call_id).options(
            selectinload(Call.context_items), selectinload(Call.segments)))
        if call is None:
            engine.dispose()
            raise click.ClickException(f"no call {call_id}")
        data = call_as_dict(call)
    engine.dispose()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        if key not in ("context", "segments"):
            click.echo(f"{key:>15}: {value}")
    for item in data["context"]:
        mark = "✓" if item["verified"] else " "
        click.echo(f"  {mark} {item['key']} = {item['value']}  ({item['step']})")
    for seg in data["segments"]:
        click.echo(f"  segment agent={seg['agent_id']} {seg['started_at']} → {seg['ended_at']} {seg['end_reason']}")


# -- commands contributed by the other packages (one line each) ---------------------------------
# (keep this block at the end; each area registers its own commands here)
from telephony.cli import asterisk as _asterisk_commands  # noqa: E402

main.add_command(_asterisk_commands)
from agent_console.cli import demo as _console_demo  # noqa: E402

main.add_command(_console_demo)
import recordings.cli as _recordings_cli  # noqa: E402

main.add_command(_recordings_cli.recordings_group)
main.add_command(_recordings_cli.transcribe_command)
main.add_command(_recordings_cli.transcribe_worker_command)
main.add_command(_recordings_cli.transcribe_jobs_command)
from routing.queue_cli import queues_group as _routing_queues  # noqa: E402

main.add_command(_routing_queues)
from routing.cli import simulate_command as _routing_simulate  # noqa: E402

main.add_command(_routing_simulate)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
