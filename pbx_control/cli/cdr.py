"""``pbx-control cdr list|show|export|purge``: the call records of the acting customer.

Human output masks the real parties (caller, callee) like every log line, so a listing can be
pasted into a ticket; X is shown in full. ``--json`` and ``export`` give the full numbers:
they are the customer's data, for scripts.
"""

from __future__ import annotations

import os
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path

import click

from .. import records as service
from ..errors import InvalidInput
from ..numbers import mask
from ..storage.db import utcnow
from .context import AppContext, emit_json, emit_table, pass_app, user_errors

_DURATION = re.compile(r"(\d{1,9})([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
LIST_COLUMNS = ["started_at", "id", "direction", "x", "caller", "callee", "decision",
                "reason", "outcome", "billsec_s"]


def parse_when(text: str, now: datetime, field: str) -> datetime:
    """'90s', '30m', '2h', '7d', '2w' ago, or an ISO 8601 time with its zone."""
    value = (text or "").strip()
    match = _DURATION.fullmatch(value)
    if match:
        return now - timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{field}: use a duration (30m, 2h, 7d) or an ISO 8601 time "
                           "with its zone", field=field) from None
    if when.tzinfo is None:
        raise InvalidInput(f"{field}: the time needs its zone (e.g. +08:00 or Z)", field=field)
    return when


def _filters(func):
    options = [
        click.option("--since", default=None, help="From this time (ISO 8601) or this long ago "
                     "(2h, 7d)."),
        click.option("--until", default=None, help="Before this time or this long ago."),
        click.option("--x", "x", default=None, help="Calls on this X."),
        click.option("--binding", "binding_id", default=None, help="Calls of this binding."),
        click.option("--out-id", default=None, help="Calls of the binding with this out_id."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _filter_args(app: AppContext, since, until, x, binding_id, out_id) -> dict:
    now = utcnow()
    return {
        "since": parse_when(since, now, "since") if since else None,
        "until": parse_when(until, now, "until") if until else None,
        "x": x, "binding_id": binding_id, "out_id": out_id,
        "region": app.settings.default_region,
    }


def _masked(data: dict) -> dict:
    return data | {"caller": mask_party(data["caller"]), "callee": mask_party(data["callee"])}


def mask_party(value: str | None) -> str | None:
    # Short codes (120) and user names are no one's number: shown as they are. Anything
    # holding a number's worth of digits (a caller id as received included) is masked.
    if value is None or sum(ch.isdigit() for ch in value) <= 6:
        return value
    return mask(value)


@click.group()
def cdr():
    """Call records: every attempt, connected or refused."""


@cdr.command("list")
@_filters
@click.option("--limit", type=click.IntRange(1, service.PAGE_MAX), default=50,
              show_default=True)
@click.option("--cursor", default=None, help="Continue a listing (printed after a full page).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, numbers in full.")
@pass_app
@user_errors
def cdr_list(app: AppContext, since, until, x, binding_id, out_id, limit, cursor, as_json):
    """The customer's call records, newest first."""
    filters = _filter_args(app, since, until, x, binding_id, out_id)
    with app.store.session() as session:
        rows, next_cursor = service.list_records(session, app.customer_id(session),
                                                 limit=limit, cursor=cursor, **filters)
        data = [service.record_dict(r) for r in rows]
    if as_json:
        emit_json({"records": data, "next_cursor": next_cursor})
        return
    emit_table([_masked(d) for d in data], LIST_COLUMNS)
    if next_cursor:
        click.echo(f"more: --cursor {next_cursor}", err=True)


@cdr.command("show")
@click.argument("record_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, numbers in full.")
@pass_app
@user_errors
def cdr_show(app: AppContext, record_id, as_json):
    """One call record."""
    with app.store.session() as session:
        data = service.record_dict(service.get_record(session, app.customer_id(session),
                                                      record_id))
    if as_json:
        emit_json(data)
        return
    for key, value in _masked(data).items():
        if value is not None:
            click.echo(f"{key}: {value.isoformat() if isinstance(value, datetime) else value}")


@cdr.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), required=True)
@click.option("--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to this file (default: standard output).")
@_filters
@pass_app
@user_errors
def cdr_export(app: AppContext, fmt, output, since, until, x, binding_id, out_id):
    """Export call records, oldest first, with the numbers in full."""
    filters = _filter_args(app, since, until, x, binding_id, out_id)
    with app.store.session() as session:
        customer_id = app.customer_id(session)
        if output is None:
            count = service.export_records(session, customer_id, fmt, sys.stdout, **filters)
        else:
            count = _export_to_file(session, customer_id, fmt, Path(output), filters)
    click.echo(f"exported {count} records", err=True)


def _export_to_file(session, customer_id, fmt, path: Path, filters) -> int:
    """Written beside the target and renamed at the end: a failed export leaves no half
    file where a previous good one was."""
    partial = path.with_name(path.name + ".partial")
    try:
        # Owner-only from the start: the export holds the numbers in full.
        partial.unlink(missing_ok=True)
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(descriptor, "w", encoding="utf-8", newline="") as stream:
            count = service.export_records(session, customer_id, fmt, stream, **filters)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise click.ClickException(f"output {path}: {exc.strerror or exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count


@cdr.command("purge")
@click.option("--older-than", default=None,
              help="Age (180d) or ISO 8601 time; default: the retention setting "
                   "(cdr_retention_days).")
@click.option("--all-customers", is_flag=True, help="Purge every customer's records.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
@user_errors
def cdr_purge(app: AppContext, older_than, all_customers, yes):
    """Delete old call records together with their recording files."""
    now = utcnow()
    cutoff = parse_when(older_than or f"{app.settings.cdr_retention_days}d", now,
                        "older-than")
    whose = "every customer" if all_customers else f"customer {app.customer_name}"
    if not yes:
        click.confirm(f"Delete the call records of {whose} started before "
                      f"{cutoff.isoformat()}, and their recordings?", abort=True)

    with app.store.session() as session:
        customer_id = None if all_customers else app.customer_id(session)
        result = service.purge_records(session, older_than=cutoff, customer_id=customer_id)
    click.echo(f"purged {result[0]} records and {result[1]} recording files")
    if result.kept:
        raise click.ClickException(
            f"{len(result.kept)} records kept: their recordings could not be deleted "
            "(see the log); they are retried on the next purge")
