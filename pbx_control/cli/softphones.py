"""``pbx-control softphones add|remove|list``: PBX users and the subscribers they stand for."""

from __future__ import annotations

import click

from .. import softphones as service
from ..storage.db import utcnow
from .context import AppContext, emit_json, emit_table, pass_app, user_errors


@click.group()
def softphones():
    """Softphone accounts (FreeSWITCH directory users, Asterisk endpoints)."""


@softphones.command("add")
@click.argument("user")
@click.argument("subscriber", metavar="A")
@pass_app
@user_errors
def softphones_add(app: AppContext, user, subscriber):
    """Map softphone USER to subscriber number A."""
    with app.store.session() as session:
        customer_id = app.customer_id(session, provisioning=True)
        phone = service.add_softphone(session, customer_id, user, subscriber, utcnow(),
                                      region=app.settings.default_region)
        click.echo(f"softphone {phone.username} -> {phone.subscriber}")


@softphones.command("remove")
@click.argument("user")
@pass_app
@user_errors
def softphones_remove(app: AppContext, user):
    """Remove a softphone account no active binding rings."""
    with app.store.session() as session:
        service.remove_softphone(session, app.customer_id(session, provisioning=True), user)
        click.echo(f"removed softphone {user}")


@softphones.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_app
@user_errors
def softphones_list(app: AppContext, as_json):
    """The customer's softphone accounts."""
    with app.store.session() as session:
        rows = [service.softphone_dict(p)
                for p in service.list_softphones(session, app.customer_id(session))]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["username", "subscriber", "created_at"])
