"""``callcentre asterisk …`` commands."""

from __future__ import annotations

import click

from telephony.asterisk_config import extensions_conf, manager_conf


@click.group("asterisk")
def asterisk() -> None:
    """Asterisk backend helpers."""


@asterisk.command("config")
@click.option("--show-secret", is_flag=True, help="Print the configured AMI secret instead of a placeholder.")
@click.option("--permit", default="", help="Network allowed to log in to AMI (default: the FastAGI host).")
@click.pass_obj
def config(ctx: object, show_secret: bool, permit: str) -> None:
    """Print the manager.conf and extensions.conf snippets for this platform's settings."""
    settings = ctx.settings  # type: ignore[attr-defined]
    numbers = tuple(n.strip() for n in settings.sip.numbers.split(",") if n.strip()) or ("1000",)
    click.echo(manager_conf(settings.asterisk, show_secret=show_secret, permit=permit))
    click.echo(extensions_conf(settings.asterisk, numbers=numbers))
