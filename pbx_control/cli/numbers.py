"""``pbx-control numbers add|list|show|retire|counts``: the customer's pool of virtual numbers."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import click

from .. import pool
from ..bindings import binding_dict, find_bindings
from ..customers import check_text
from ..errors import InvalidInput
from ..numbers import expand_range, parse
from ..routing import NumberState
from ..storage.db import utcnow
from .context import AppContext, check_options, emit_json, emit_table, pass_app, user_errors

_RANGE = re.compile(r"\s*(\+?[\d ]{7,})\s*-\s*(\+?[\d ]{7,})\s*")
_CAP_SPLIT = re.compile(r"[\s,;|]+")


def parse_caps(text: str, where: str = "--cap") -> tuple[bool, bool]:
    """'voice,sms' -> (voice, sms)."""
    caps = {c.lower() for c in _CAP_SPLIT.split(text or "") if c}
    unknown = caps - set(pool.CAPABILITIES)
    if unknown or not caps:
        raise InvalidInput(f"{where}: capabilities are voice and/or sms", field="capabilities")
    return "voice" in caps, "sms" in caps


def expand_arguments(values: tuple[str, ...], region: str) -> list[str]:
    """Single numbers and FIRST-LAST ranges, all in E.164."""
    found: list[str] = []
    for value in values:
        match = _RANGE.fullmatch(value)
        if match:
            found.extend(expand_range(match.group(1), match.group(2), region))
        else:
            found.append(parse(value, "number", region))
    return found


def read_csv(path: Path, defaults: dict, region: str) -> dict[tuple, list[str]]:
    """Rows of number,carrier,city,capabilities grouped by their attributes.

    Every row is checked before anything is written: one bad row stops the import.
    """
    groups: dict[tuple, list[str]] = defaultdict(list)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "number" not in reader.fieldnames:
                raise InvalidInput(f"{path.name}: needs a header with a 'number' column",
                                   field="csv")
            for row in reader:
                key, number = _csv_row(row, reader.line_num, defaults, region)
                groups[key].append(number)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(f"{path.name}: not a UTF-8 CSV file ({type(exc).__name__})",
                           field="csv") from None
    return groups


def _csv_row(row: dict, line: int, defaults: dict, region: str) -> tuple[tuple, str]:
    try:
        number = parse(row.get("number") or "", "number", region)
        carrier = check_text((row.get("carrier") or "").strip() or defaults["carrier"],
                             "carrier")
        city = check_text((row.get("city") or "").strip() or defaults["city"], "city")
        caps = row.get("capabilities")
        voice, sms = parse_caps(caps, "capabilities") if caps else defaults["caps"]
    except InvalidInput as exc:
        raise InvalidInput(f"row {line}: {exc.message}", field="csv") from None
    return (carrier, city, voice, sms), number


@click.group()
def numbers():
    """The pool of virtual numbers X."""


@numbers.command("add")
@click.argument("values", nargs=-1, metavar="NUMBER...|FIRST-LAST")
@click.option("--csv", "csv_path", type=click.Path(exists=True, dir_okay=False,
                                                     path_type=Path),
              help="CSV with columns number,carrier,city,capabilities (not with NUMBER "
                   "arguments); --carrier, --city and --cap fill its empty cells.")
@click.option("--carrier", default="default", show_default=True)
@click.option("--city", default=None)
@click.option("--cap", "cap", default="voice,sms", show_default=True,
              help="Capabilities: voice, sms or both.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
@user_errors
def numbers_add(app: AppContext, values, csv_path, carrier, city, cap, as_json):
    """Add numbers, FIRST-LAST ranges or a CSV file to the pool (all or nothing)."""
    if not values and csv_path is None:
        raise click.UsageError("give numbers, a FIRST-LAST range or --csv FILE")
    if values and csv_path is not None:
        raise InvalidInput("--csv: give either a CSV file or numbers, not both", field="csv")
    check_options({"--carrier": carrier, "--city": city, "--cap": cap})
    region = app.settings.default_region
    voice, sms = parse_caps(cap)
    defaults = {"carrier": carrier, "city": city, "caps": (voice, sms)}

    batches = read_csv(csv_path, defaults, region) if csv_path else {}
    if values:
        key = (carrier, city, voice, sms)
        batches = dict(batches)
        batches[key] = list(batches.get(key, [])) + expand_arguments(values, region)

    result = pool.AddResult()
    with app.store.session() as session:
        customer_id = app.customer_id(session, provisioning=True)
        for (b_carrier, b_city, b_voice, b_sms), batch in batches.items():
            part = pool.add_numbers(session, customer_id, batch, carrier=b_carrier,
                                    city=b_city, voice=b_voice, sms=b_sms, now=utcnow(),
                                    region=region)
            result.added += part.added
            result.existing += part.existing
    if as_json:
        emit_json({"added": result.added, "existing": result.existing})
    else:
        click.echo(f"added {len(result.added)}, already in the pool {len(result.existing)}")


@numbers.command("list")
@click.option("--state", type=click.Choice([s.value for s in NumberState]))
@click.option("--city")
@click.option("--carrier")
@click.option("--cap", type=click.Choice(list(pool.CAPABILITIES)), help="Has this capability.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@click.option("--after", default=None, metavar="X",
              help="Continue a listing after this number (printed after a full page).")
@click.option("--json", "as_json", is_flag=True)
@pass_app
@user_errors
def numbers_list(app: AppContext, state, city, carrier, cap, limit, after, as_json):
    """List the pool in the order numbers were added, optionally filtered."""
    check_options({"--city": city, "--carrier": carrier, "--after": after})
    with app.store.session() as session:
        customer_id = app.customer_id(session)
        after_id = None if after is None else pool.get_number(
            session, customer_id, after, region=app.settings.default_region).id
        found = pool.list_numbers(session, customer_id, state=state, city=city,
                                  carrier=carrier, capability=cap, limit=limit + 1,
                                  after_id=after_id)
        rows = [pool.number_dict(n) for n in found[:limit]]
    _print_numbers(rows, as_json)
    if len(found) > limit:
        # On stderr, like `cdr list`: the JSON on stdout stays one array.
        click.echo(f"more numbers: --after {rows[-1]['x']}", err=True)


def _print_numbers(rows: list[dict], as_json: bool) -> None:
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        row["capabilities"] = ",".join(row["capabilities"])
    emit_table(rows, ["x", "state", "city", "carrier", "capabilities", "active_bindings",
                      "total_bindings"])


@numbers.command("show")
@click.argument("x")
@click.option("--json", "as_json", is_flag=True)
@pass_app
@user_errors
def numbers_show(app: AppContext, x, as_json):
    """One number with its active bindings."""
    with app.store.session() as session:
        customer_id = app.customer_id(session)
        number = pool.get_number(session, customer_id, x, region=app.settings.default_region)
        data = pool.number_dict(number)
        data["bindings"] = [binding_dict(b) for b in find_bindings(
            session, customer_id, x=number.e164, limit=None)]
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        if key != "bindings":
            click.echo(f"{key}: {','.join(value) if isinstance(value, list) else value}")
    click.echo(f"bindings: {len(data['bindings'])}")
    if data["bindings"]:
        emit_table(data["bindings"], ["id", "mode", "a", "b", "expires_at"])


@numbers.command("retire")
@click.argument("x")
@click.option("--force", is_flag=True, help="End its active bindings (reason 'retired').")
@pass_app
@user_errors
def numbers_retire(app: AppContext, x, force):
    """Take a number out of service."""
    with app.store.session() as session:
        customer_id = app.customer_id(session, provisioning=True)
        number = pool.retire_number(session, customer_id, x, now=utcnow(), force=force,
                                    region=app.settings.default_region)
        click.echo(f"retired {number.e164}")


@numbers.command("counts")
@click.option("--json", "as_json", is_flag=True)
@pass_app
@user_errors
def numbers_counts(app: AppContext, as_json):
    """How many numbers per city and state."""
    with app.store.session() as session:
        rows = pool.number_counts(session, app.customer_id(session))
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["city", "state", "count"])
