"""Registering a webhook does not replay old calls, through the API and the CLI: events
recorded while no pusher ran are skipped when a customer first registers a webhook, and stay
pending (for the new URL) when it only changes one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from api_support import LiveServer, Receiver, make_tenant, refused_call
from click.testing import CliRunner
from sqlalchemy import select

from pbx_control import customers
from pbx_control.api.app import create_app
from pbx_control.api.webhook_config import SKIPPED_BEFORE
from pbx_control.api.webhooks import WebhookPusher
from pbx_control.cli.main import cli
from pbx_control.storage import Store
from pbx_control.storage.tables import CallEvent

X1 = "+8613900000001"


@pytest.fixture
def local(settings):
    settings.api.webhook_allow_http = True
    settings.api.webhook_allow_networks = ["127.0.0.0/8"]
    return settings


@pytest.fixture
def api(pg_store, local):
    with LiveServer(create_app(pg_store, local)) as server:
        yield server


def outbox(store) -> list[tuple[str, bool, str | None]]:
    """(record id, delivered, last error) of every event, oldest first."""
    with store.session() as s:
        return [(e.record_id, e.delivered_at is not None, e.last_error)
                for e in s.scalars(select(CallEvent).order_by(CallEvent.id))]


def push_once(store, settings) -> int:
    later = datetime.now(UTC) + timedelta(minutes=1)
    return asyncio.run(WebhookPusher(store, settings, clock=lambda: later).run_once())


def delivered_records(receiver: Receiver) -> list[str]:
    return [d.json()["data"]["id"] for d in receiver.deliveries]


def test_the_first_put_of_a_webhook_skips_the_calls_recorded_before_it(api, pg_store, local):
    tenant = make_tenant(pg_store, "acme", [X1])
    old = [refused_call(pg_store, tenant.id, datetime.now(UTC)) for _ in range(3)]

    with Receiver() as receiver, api.client(tenant.key) as client:
        assert client.put("/v1/webhook", json={"url": receiver.url}).status_code == 200
        assert outbox(pg_store) == [(r, True, SKIPPED_BEFORE) for r in old]

        new = refused_call(pg_store, tenant.id, datetime.now(UTC))
        assert push_once(pg_store, local) == 1

    assert delivered_records(receiver) == [new]


def test_changing_the_url_keeps_the_pending_events_for_the_new_one(api, pg_store, local):
    tenant = make_tenant(pg_store, "acme", [X1])
    other = make_tenant(pg_store, "other")
    with Receiver() as first, Receiver() as second, api.client(tenant.key) as client:
        assert client.put("/v1/webhook", json={"url": first.url}).status_code == 200
        pending = refused_call(pg_store, tenant.id, datetime.now(UTC))
        theirs = refused_call(pg_store, other.id, datetime.now(UTC))

        assert client.put("/v1/webhook", json={"url": second.url}).status_code == 200
        assert outbox(pg_store) == [(pending, False, None), (theirs, False, None)]
        push_once(pg_store, local)

    assert (delivered_records(first), delivered_records(second)) == ([], [pending])


@pytest.fixture
def cli_store(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    monkeypatch.setenv("PBX_CONTROL_DATABASE_URL", url)
    monkeypatch.delenv("PBX_CONTROL_CONFIG", raising=False)
    monkeypatch.setenv("PBX_CONTROL_API_WEBHOOK_ALLOW_HTTP", "true")
    monkeypatch.setenv("PBX_CONTROL_API_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8")
    assert CliRunner().invoke(cli, ["db", "upgrade"]).exit_code == 0
    store = Store(url)
    yield store
    store.dispose()


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_customers_webhook_set_skips_the_backlog_once(cli_store):
    run("customers", "add", "acme")
    with cli_store.session() as s:
        tenant_id = customers.customer_by_name(s, "acme").id
    old = refused_call(cli_store, tenant_id, datetime.now(UTC))

    output = run("customers", "webhook", "set", "acme", "http://127.0.0.1:9/hook")
    assert "1 events of earlier calls skipped" in output
    assert outbox(cli_store) == [(old, True, SKIPPED_BEFORE)]

    pending = refused_call(cli_store, tenant_id, datetime.now(UTC))
    output = run("customers", "webhook", "set", "acme", "http://127.0.0.1:9/other")
    assert "skipped" not in output
    assert outbox(cli_store)[1] == (pending, False, None)
