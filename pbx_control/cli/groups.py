"""``pbx-control groups create|add|remove|list|delete``: AXG allow-groups."""

from __future__ import annotations

import click

from .. import groups as service
from ..storage.db import utcnow
from .context import AppContext, emit_json, emit_table, pass_app, user_errors


@click.group()
def groups():
    """Allow-groups: the callers who may reach A through an AXG binding."""


@groups.command("create")
@click.argument("name")
@pass_app
@user_errors
def groups_create(app: AppContext, name):
    """Create an empty group."""
    with app.store.session() as session:
        customer_id = app.customer_id(session, provisioning=True)
        group = service.create_group(session, customer_id, name, utcnow())
        click.echo(f"created group {group.name}")


@groups.command("add")
@click.argument("name")
@click.argument("numbers", nargs=-1, required=True)
@pass_app
@user_errors
def groups_add(app: AppContext, name, numbers):
    """Add numbers to a group."""
    with app.store.session() as session:
        customer_id = app.customer_id(session, provisioning=True)
        added = service.add_members(session, customer_id, name, numbers, utcnow(),
                                    region=app.settings.default_region)
        click.echo(f"group {name}: {len(added)} added")


@groups.command("remove")
@click.argument("name")
@click.argument("numbers", nargs=-1, required=True)
@pass_app
@user_errors
def groups_remove(app: AppContext, name, numbers):
    """Remove numbers from a group."""
    with app.store.session() as session:
        customer_id = app.customer_id(session, provisioning=True)
        removed = service.remove_members(session, customer_id, name, numbers,
                                         region=app.settings.default_region)
        click.echo(f"group {name}: {len(removed)} removed")


@groups.command("delete")
@click.argument("name")
@pass_app
@user_errors
def groups_delete(app: AppContext, name):
    """Delete a group no active binding uses."""
    with app.store.session() as session:
        service.delete_group(session, app.customer_id(session, provisioning=True), name)
        click.echo(f"deleted group {name}")


@groups.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_app
@user_errors
def groups_list(app: AppContext, as_json):
    """The groups and their members."""
    with app.store.session() as session:
        rows = [{"name": g.name, "members": sorted(m)}
                for g, m in service.list_groups(session, app.customer_id(session))]
    if as_json:
        emit_json(rows)
        return
    emit_table([{"name": r["name"], "count": len(r["members"]),
                 "members": " ".join(r["members"])} for r in rows],
               ["name", "count", "members"])
