"""What every command shares: settings, the store, the acting customer, output and errors."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import wraps
from typing import Any

import click

from .. import config
from ..errors import InvalidInput, PbxControlError, StorageUnavailable
from ..storage import Store

logger = logging.getLogger(__name__)


@dataclass
class AppContext:
    settings: config.Settings
    customer_name: str
    _store: Store | None = field(default=None, repr=False)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.settings.database_url, application_name="pbx-control-cli")
        return self._store

    def customer_id(self, session, *, provisioning: bool = False) -> int:
        """The acting customer's id; ``provisioning`` needs it active.

        Only the configured default customer is created on first use: any other name must
        exist (``customers add``), so a typo in ``--customer`` is an error, not a new tenant.
        """
        from ..customers import customer_by_name, ensure_customer, require_active
        from ..storage.db import utcnow

        if self.customer_name == self.settings.default_customer:
            customer = ensure_customer(session, self.customer_name, utcnow())
        else:
            customer = customer_by_name(session, self.customer_name)
        if provisioning:
            require_active(customer)
        return customer.id

    def close(self) -> None:
        if self._store is not None:
            self._store.dispose()


pass_app = click.make_pass_decorator(AppContext)


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "value"):
        return value.value
    raise TypeError(f"cannot serialise {type(value).__name__}")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, default=json_default, ensure_ascii=False, sort_keys=True))


def emit_table(rows: Iterable[dict], columns: list[str]) -> None:
    """Plain aligned columns for people; scripts use --json."""
    rows = [{c: _cell(r.get(c)) for c in columns} for r in rows]
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        click.echo("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z")
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(getattr(value, "value", value))


def check_options(values: dict[str, str | None]) -> None:
    """Free-text options ({'--city': value}): given means non-empty and one printable line.

    An empty value would otherwise be taken as "not given", and a line break would forge
    lines in tables, logs and exports.
    """
    for option, value in values.items():
        if value is None:
            continue
        field = option.lstrip("-").replace("-", "_")
        if not value.strip():
            raise InvalidInput(f"{option}: must not be empty", field=field)
        if not value.isprintable():
            raise InvalidInput(f"{option}: control characters (line breaks, tabs) are not "
                               "allowed", field=field)


def user_errors(func: Callable) -> Callable:
    """Turn domain errors into one-line click errors (exit 1), never a traceback."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except StorageUnavailable as exc:
            if exc.code == "schema_missing":
                raise click.ClickException(f"{exc.code}: {exc.message}") from None
            raise click.ClickException(
                f"{exc.code}: {exc.message} (is the database up, and migrated with "
                "'pbx-control db upgrade'?)") from None
        except PbxControlError as exc:
            raise click.ClickException(_one_line(f"{exc.code}: {exc.message}")) from None
        except config.ConfigError as exc:
            raise click.ClickException(f"config: {exc}") from None
        except OSError as exc:
            # A file named on the command line (an export target, a CSV to import).
            where = f"{exc.filename}: " if exc.filename is not None else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None

    return wrapper


def _one_line(message: str) -> str:
    """Errors are one line (scripts read the first): escape what would break it."""
    return message if message.isprintable() else repr(message)[1:-1]


def setup_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
