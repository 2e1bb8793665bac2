"""The ``pbx-control`` group. Each command family lives in a module of its own below."""

from __future__ import annotations

import importlib
import logging

import click

from .. import __version__, config
from .context import AppContext, setup_logging

logger = logging.getLogger(__name__)

# (module, command name): each module defines a click command or group named ``cli``.
COMMANDS = [
    ("db", "db"),
    ("numbers", "numbers"),
    ("bindings", "bind"),
    ("bindings", "unbind"),
    ("bindings", "bindings"),
    ("groups", "groups"),
    ("softphones", "softphones"),
    ("blacklist", "blacklist"),
    ("cdr", "cdr"),
    ("route", "route"),
    ("customers", "customers"),
    ("customers", "keys"),
    ("serve", "serve"),
    ("demo", "demo"),
]


class LazyGroup(click.Group):
    """Imports a command's module only when it runs, so ``--help`` and one command stay fast
    and a missing optional piece breaks only its own command."""

    def list_commands(self, ctx):
        return sorted({name for _, name in COMMANDS})

    def get_command(self, ctx, name):
        for module, command in COMMANDS:
            if command == name:
                mod = importlib.import_module(f"pbx_control.cli.{module}")
                return getattr(mod, name.replace("-", "_"))
        return None


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="pbx-control")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              envvar="PBX_CONTROL_CONFIG", help="TOML settings file.")
@click.option("--customer", default=None, help="Act for this customer (default: 'default').")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, customer: str | None, log_level: str):
    """pbx-control: privacy numbers beside FreeSWITCH or Asterisk."""
    setup_logging(log_level)
    try:
        settings = config.load(config_path)
    except config.ConfigError as exc:
        # The same one line as ``serve`` prints for the settings it checks itself.
        click.echo(f"config: {exc}", err=True)
        ctx.exit(1)
    if customer is not None and not customer.strip():
        # An empty name (an unset shell variable, most often) must not act for 'default'.
        raise click.BadParameter("an empty customer name", param_hint="'--customer'")
    app = AppContext(settings=settings, customer_name=customer or settings.default_customer)
    ctx.obj = app
    ctx.call_on_close(app.close)


def main() -> None:
    cli(prog_name="pbx-control")
