"""``pbx-control serve freeswitch|asterisk|api``: the long-running processes."""

from __future__ import annotations

import click

from .context import AppContext, pass_app


@click.group()
def serve():
    """Run a controller or the HTTP API in the foreground."""


@serve.command("freeswitch")
@click.option("--host", default=None, help="Listen address (default from settings).")
@click.option("--port", type=click.IntRange(0, 65535), default=None)
@pass_app
def serve_freeswitch(app: AppContext, host: str | None, port: int | None):
    """The outbound event-socket server FreeSWITCH's dialplan `socket` connects to."""
    from ..freeswitch.service import run

    run(app.settings, host=host, port=port)


@serve.command("asterisk")
@pass_app
def serve_asterisk(app: AppContext):
    """The Stasis application over ARI."""
    from ..asterisk.service import run

    run(app.settings)


@serve.command("api")
@click.option("--host", default=None)
@click.option("--port", type=click.IntRange(0, 65535), default=None)
@pass_app
def serve_api(app: AppContext, host: str | None, port: int | None):
    """The HTTP provisioning API for business customers."""
    from ..api.server import run

    run(app.settings, host=host, port=port)
