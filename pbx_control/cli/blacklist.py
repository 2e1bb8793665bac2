"""``pbx-control blacklist add|remove|list``: callers refused for the customer or on one X.

Listings show numbers in full: they are the operator's own entries, needed to remove them.
"""

from __future__ import annotations

import click

from .. import blacklist as service
from ..storage.db import utcnow
from .context import AppContext, check_options, emit_json, emit_table, pass_app, user_errors


@click.group()
def blacklist():
    """Callers refused for the whole customer, or on one X only."""


@blacklist.command("add")
@click.argument("number")
@click.option("--x", "x", default=None, help="Refuse the caller on this X only.")
@click.option("--reason", default=None, help="A note for the next operator.")
@click.option("--json", "as_json", is_flag=True, help="Print the entry as JSON.")
@pass_app
@user_errors
def blacklist_add(app: AppContext, number, x, reason, as_json):
    """Refuse NUMBER's calls (on every X of the customer unless --x)."""
    check_options({"--x": x, "--reason": reason})
    with app.store.session() as session:
        customer_id = app.customer_id(session, provisioning=True)
        entry = service.add_entry(session, customer_id, number, x=x, reason=reason,
                                  now=utcnow(), region=app.settings.default_region)
        data = service.entry_dict(entry)
    if as_json:
        emit_json(data)
        return
    where = f"on {data['x']}" if data["x"] else "on every X"
    click.echo(f"blacklisted {data['number']} {where}")


@blacklist.command("remove")
@click.argument("number")
@click.option("--x", "x", default=None, help="The X of the entry (none: the whole-customer one).")
@pass_app
@user_errors
def blacklist_remove(app: AppContext, number, x):
    """Take NUMBER off the blacklist."""
    with app.store.session() as session:
        customer_id = app.customer_id(session, provisioning=True)
        service.remove_entry(session, customer_id, number, x=x,
                             region=app.settings.default_region)
    click.echo("removed")


@blacklist.command("list")
@click.option("--x", "x", default=None, help="Only the entries of this X.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
@user_errors
def blacklist_list(app: AppContext, x, as_json):
    """The blacklist of the customer."""
    with app.store.session() as session:
        entries = service.list_entries(session, app.customer_id(session), x=x,
                                       region=app.settings.default_region)
        rows = [service.entry_dict(e) for e in entries]
    if as_json:
        emit_json(rows)
        return
    emit_table([r | {"x": r["x"] or "(every X)"} for r in rows],
               ["number", "x", "reason", "created_at"])
