"""``pbx-control bind axb|ax|axn|axg``, ``unbind`` and ``bindings list|show|update``."""

from __future__ import annotations

from datetime import datetime

import click

from .. import bindings as service
from ..errors import InvalidInput
from ..routing import Direction, Mode
from ..storage.db import utcnow
from ..storage.tables import Group
from .context import AppContext, check_options, emit_json, emit_table, pass_app, user_errors

LIST_COLUMNS = ["id", "mode", "x", "a", "b", "default_party", "expires_at", "out_id"]


def _common(func):
    """Options every bind mode takes."""
    options = [
        click.option("--x", "x", default=None, help="Use this pool number instead of allocating."),
        click.option("--city", default=None, help="Allocate X in this city."),
        click.option("--any-city", is_flag=True,
                     help="Fall back to any city when --city has no number left."),
        click.option("--expires", default=None,
                     help="Duration (90s, 30m, 2h, 7d) or ISO 8601 time with its zone."),
        click.option("--out-id", default=None, help="Your own reference (retries are safe)."),
        click.option("--record", is_flag=True, help="Record the calls."),
        click.option("--direction", type=click.Choice([d.value for d in Direction]),
                     default=Direction.BOTH.value, show_default=True),
        click.option("--no-sms", is_flag=True, help="Do not relay SMS."),
        click.option("--max-duration", type=click.IntRange(1, 86400), default=None,
                     help="Longest call in seconds."),
        click.option("--json", "as_json", is_flag=True, help="Print the binding as JSON."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _request(app: AppContext, mode: Mode, a: str, opts: dict, **extra) -> service.BindRequest:
    expires = opts["expires"]
    check_options({"--x": opts["x"], "--city": opts["city"], "--expires": expires,
                   "--out-id": opts["out_id"], "--softphone": extra.get("softphone"),
                   "--default": extra.get("default_party"), "--group": extra.get("group")})
    if opts["x"] is not None and opts["city"] is not None:
        raise InvalidInput("--city: chooses the city of an allocated X; not with --x",
                           field="city")
    if opts["any_city"] and opts["city"] is None:
        raise InvalidInput("--any-city: only with --city", field="city")
    return service.BindRequest(
        mode=mode, a=a, x=opts["x"], city=opts["city"], city_strict=not opts["any_city"],
        expires_at=service.parse_expires(expires, utcnow()) if expires else None,
        out_id=opts["out_id"], record=opts["record"], direction=Direction(opts["direction"]),
        sms=not opts["no_sms"], max_call_s=opts["max_duration"], **extra)


def _run_bind(app: AppContext, request: service.BindRequest, as_json: bool) -> None:
    with app.store.session() as session:
        customer_id = app.customer_id(session, provisioning=True)
        binding = service.bind(session, customer_id, request, now=utcnow(),
                               settings=app.settings, region=app.settings.default_region)
        data = service.binding_dict(binding, _group_name(session, binding.group_id))
    _show(data, as_json)


def _group_name(session, group_id: int | None) -> str | None:
    return session.get(Group, group_id).name if group_id is not None else None


def _show(data: dict, as_json: bool) -> None:
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        if value is not None and value is not False:
            text = value.isoformat() if isinstance(value, datetime) else value
            click.echo(f"{key}: {text}")


@click.group()
def bind():
    """Bind parties to a virtual number X."""


@bind.command("axb")
@click.argument("a")
@click.argument("b")
@_common
@pass_app
@user_errors
def bind_axb(app: AppContext, a, b, as_json, **opts):
    """A and B reach each other through X; everyone else is refused."""
    _run_bind(app, _request(app, Mode.AXB, a, opts, b=b), as_json)


@bind.command("ax")
@click.argument("a")
@click.option("--primary", is_flag=True, help="The X shown when A calls out.")
@click.option("--softphone", default=None, help="Ring this softphone user instead of A.")
@click.option("--allow-withheld", is_flag=True, help="Let withheld callers reach A.")
@_common
@pass_app
@user_errors
def bind_ax(app: AppContext, a, primary, softphone, allow_withheld, as_json, **opts):
    """X belongs to A: any caller reaches A; A calls out from a softphone showing X."""
    request = _request(app, Mode.AX, a, opts, primary=primary, softphone=softphone,
                       allow_withheld=allow_withheld)
    _run_bind(app, request, as_json)


@bind.command("axn")
@click.argument("a")
@click.option("--default", "default_party", default=None,
              help="Whom A reaches by calling X.")
@click.option("--allow-withheld", is_flag=True, help="Let withheld callers reach A.")
@_common
@pass_app
@user_errors
def bind_axn(app: AppContext, a, default_party, allow_withheld, as_json, **opts):
    """Any caller reaches A; A calling X reaches the default party."""
    request = _request(app, Mode.AXN, a, opts, default_party=default_party,
                       allow_withheld=allow_withheld)
    _run_bind(app, request, as_json)


@bind.command("axg")
@click.argument("a")
@click.option("--group", required=True, help="The allow-group of callers.")
@click.option("--default", "default_party", default=None,
              help="Whom A reaches by calling X.")
@_common
@pass_app
@user_errors
def bind_axg(app: AppContext, a, group, default_party, as_json, **opts):
    """Only the members of the group reach A through X."""
    request = _request(app, Mode.AXG, a, opts, group=group, default_party=default_party)
    _run_bind(app, request, as_json)


@click.command()
@click.argument("binding_id", metavar="ID")
@pass_app
@user_errors
def unbind(app: AppContext, binding_id):
    """End a binding now."""
    with app.store.session() as session:
        customer_id = app.customer_id(session, provisioning=True)
        binding = service.unbind(session, customer_id, binding_id, now=utcnow(),
                                 settings=app.settings)
        click.echo(f"unbound {binding.id}")


@click.group()
def bindings():
    """List, show and update bindings."""


@bindings.command("list")
@click.option("--x", "x", default=None, help="Bindings on this X.")
@click.option("--party", default=None, help="Bindings this number is a party of.")
@click.option("--out-id", default=None)
@click.option("--all", "show_all", is_flag=True,
              help="Include ended bindings and expired ones not swept yet.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_app
@user_errors
def bindings_list(app: AppContext, x, party, out_id, show_all, limit, as_json):
    """The customer's bindings (active only: neither ended nor expired, unless --all)."""
    with app.store.session() as session:
        customer_id = app.customer_id(session)
        now = utcnow()
        rows = [service.binding_dict(b, now=now) for b in service.find_bindings(
            session, customer_id, x=x, party=party, out_id=out_id, active=not show_all,
            limit=limit, region=app.settings.default_region, now=now)]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, LIST_COLUMNS + (["ended_at", "end_reason"] if show_all else []))


@bindings.command("show")
@click.argument("binding_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True)
@pass_app
@user_errors
def bindings_show(app: AppContext, binding_id, as_json):
    """One binding, ended or not."""
    with app.store.session() as session:
        binding = service.get_binding(session, app.customer_id(session), binding_id)
        data = service.binding_dict(binding, _group_name(session, binding.group_id))
    _show(data, as_json)


@bindings.command("update")
@click.argument("binding_id", metavar="ID")
@click.option("--expires", default=None,
              help="New expiry: duration, ISO 8601 time with zone, or 'never'.")
@click.option("--a", "a", default=None, help="New party A.")
@click.option("--b", "b", default=None, help="New party B (axb).")
@click.option("--default", "default_party", default=None,
              help="New default party (axn, axg); 'none' removes it.")
@click.option("--json", "as_json", is_flag=True)
@pass_app
@user_errors
def bindings_update(app: AppContext, binding_id, expires, a, b, default_party, as_json):
    """Change an active binding's expiry, parties or default party."""
    if expires is None and a is None and b is None and default_party is None:
        raise click.UsageError("nothing to change: give --expires, --a, --b or --default")
    check_options({"--expires": expires, "--a": a, "--b": b, "--default": default_party})
    now = utcnow()
    changes = {"a": a, "b": b}
    changes = {k: v for k, v in changes.items() if v is not None}
    if expires is not None:
        changes["expires_at"] = None if expires == "never" else service.parse_expires(
            expires, now)
    if default_party is not None:
        changes["default_party"] = None if default_party == "none" else default_party

    with app.store.session() as session:
        customer_id = app.customer_id(session, provisioning=True)
        binding = service.update_binding(session, customer_id, binding_id, now=now,
                                         settings=app.settings,
                                         region=app.settings.default_region, **changes)
        data = service.binding_dict(binding, _group_name(session, binding.group_id))
    _show(data, as_json)


@bindings.command("sweep")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True,
              help="End at most this many bindings in one transaction.")
@pass_app
@user_errors
def bindings_sweep(app: AppContext, limit):
    """End the bindings whose expiry has passed (for cron; routing ignores them already)."""
    with app.store.session() as session:
        ended = service.sweep_expired(session, utcnow(), limit=limit, settings=app.settings)
    click.echo(f"ended {ended} expired bindings")
