"""``pbx-control db upgrade|current``: the schema, through Alembic migrations."""

from __future__ import annotations

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from ..storage import migrate
from .context import AppContext, pass_app, user_errors


def make_url_safe(url: str) -> str:
    """The database URL with its password hidden, for error messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a malformed URL: say so without echoing it
        return "(unparsable URL)"


@click.group()
def db():
    """Create or upgrade the database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True,
              help="Alembic revision to upgrade to.")
@pass_app
@user_errors
def db_upgrade(app: AppContext, revision: str):
    """Apply the migrations up to REVISION (all of them by default)."""
    url = app.settings.database_url
    try:
        migrate.upgrade(url, revision)
        now = migrate.current(url)
    except SQLAlchemyError as exc:
        raise click.ClickException(
            f"database {make_url_safe(url)}: {type(exc).__name__}") from None
    except Exception as exc:  # Alembic reports an unknown revision with its own errors.
        if type(exc).__module__.startswith("alembic"):
            raise click.ClickException(f"revision {revision!r}: {exc}") from None
        raise
    click.echo(f"database at revision {now}")


@db.command("current")
@pass_app
@user_errors
def db_current(app: AppContext):
    """Print the revision the database is at ('none' before the first upgrade)."""
    try:
        click.echo(migrate.current(app.settings.database_url) or "none")
    except SQLAlchemyError as exc:
        safe = make_url_safe(app.settings.database_url)
        raise click.ClickException(f"database {safe}: {type(exc).__name__}") from None
