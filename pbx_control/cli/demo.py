"""``pbx-control demo``: the main job without a PBX.

Starts the FreeSWITCH controller on an embedded SQLite database (a fresh file in a temporary
directory unless ``--database`` names one), provisions a small pool and an AXB binding, and
plays FreeSWITCH's side of recorded real calls against it through the protocol double: A
calls X, B calls X, a stranger calls X, B busy. Each decision and the call record it left are
printed, numbers masked as in every log line.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import click
from alembic.util import CommandError
from sqlalchemy.exc import SQLAlchemyError

from ..bindings import BindRequest, bind
from ..customers import ensure_customer
from ..failures import database_problem
from ..numbers import mask
from ..pool import add_numbers
from ..routing import Mode
from ..storage import Store
from ..storage.migrate import upgrade
from .context import AppContext, pass_app, user_errors

logger = logging.getLogger(__name__)

A, B, STRANGER = "+8613900000000", "+8613800000000", "+8613700000009"
POOL = [f"+861700000000{i}" for i in range(1, 6)]
X = POOL[0]

CALLS = [
    ("A calls X", A, "answered"),
    ("B calls X", B, "answered"),
    ("a stranger calls X", STRANGER, "answered"),
    ("A calls X, B is busy", A, "busy"),
]
SHOWN = ("decision", "reason", "outcome", "hangup_by", "sip_status", "q850_cause",
         "pbx_cause", "billsec_s")


@click.command()
@click.option("--database", default=None,
              help="Database URL (default: a fresh SQLite file in a temporary directory).")
@pass_app
@user_errors
def demo(app: AppContext, database: str | None):
    """Play recorded FreeSWITCH calls through the controller: no PBX needed."""
    settings = copy.deepcopy(app.settings)
    with tempfile.TemporaryDirectory(prefix="pbx-control-demo-") as tmp:
        settings.database_url = database or f"sqlite:///{Path(tmp) / 'demo.sqlite'}"
        try:
            upgrade(settings.database_url)
        except (SQLAlchemyError, CommandError, ValueError, ImportError) as exc:
            raise click.ClickException(database_problem(exc, settings.database_url)) from None
        store = Store(settings.database_url, application_name="pbx-control-demo")
        try:
            _provision(store, settings)
            _play(store, settings)
        finally:
            store.dispose()


def _provision(store: Store, settings) -> None:
    now = datetime.now(UTC)
    with store.session() as session:
        customer = ensure_customer(session, "demo", now)
        add_numbers(session, customer.id, POOL, now=now)
        binding = bind(session, customer.id, BindRequest(mode=Mode.AXB, a=A, b=B, x=X),
                       now=now, settings=settings)
        click.echo(f"pool: {len(POOL)} numbers; binding {binding.id}: AXB "
                   f"A={mask(A)} X={mask(X)} B={mask(B)}")


def _play(store: Store, settings) -> None:
    from ..freeswitch.harness import Harness

    with Harness(settings, store) as harness:
        host, port = harness.controller.server.address
        click.echo(f"controller listening on {host}:{port}; FreeSWITCH double replaying "
                   "recorded calls\n")
        for number, (title, caller, scenario) in enumerate(CALLS, 1):
            played = harness.run(scenario, caller=caller[1:], dialed=X[1:])
            _show(number, title, caller, played)


def _show(number: int, title: str, caller: str, played) -> None:
    result, record = played.result, played.record or {}
    click.echo(f"{number}. {title}: {mask(caller)} -> {mask(X)}")
    bridge = result.bridge
    if bridge:
        target = bridge.rsplit("/", 1)[-1]
        click.echo(f"   decision: connect ({record.get('reason')}), bridged to "
                   f"{mask('+' + target)} with X shown on both legs")
    else:
        click.echo(f"   decision: refuse ({record.get('reason')})")
    click.echo(f"   caller got: SIP {result.sip_status} ({result.hangup_cause})")
    fields = ", ".join(f"{k}={record.get(k)}" for k in SHOWN)
    click.echo(f"   call record {record.get('id')}: {fields}\n")
