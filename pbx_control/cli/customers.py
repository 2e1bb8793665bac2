"""``pbx-control customers add|list|show|disable|enable|webhook`` and
``pbx-control keys create|revoke|list``: the tenants of the HTTP API and their keys."""

from __future__ import annotations

import click

from .. import customers as service
from .. import keys as key_service
from ..api.targets import WebhookPolicy
from ..api.webhook_config import clear_webhook, set_webhook
from ..storage.db import utcnow
from .context import AppContext, emit_json, emit_table, pass_app, user_errors


@click.group()
def customers():
    """Business customers: each has its own pool, bindings, records and API keys."""


@customers.command("add")
@click.argument("name")
@pass_app
@user_errors
def customers_add(app: AppContext, name: str):
    """Create a customer (then give it a key with `keys create --customer NAME`)."""
    with app.store.session() as session:
        customer = service.create_customer(session, name, utcnow())
        click.echo(f"created customer {customer.name}")


@customers.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@pass_app
@user_errors
def customers_list(app: AppContext, as_json: bool):
    """All customers with their status and whether a webhook is set."""
    with app.store.session() as session:
        rows = [dict(service.customer_dict(c), webhook=c.webhook_url is not None)
                for c in service.list_customers(session)]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["name", "status", "webhook", "created_at"])


@customers.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@pass_app
@user_errors
def customers_show(app: AppContext, name: str, as_json: bool):
    """One customer: status, webhook URL (never its secret), its keys (never the keys)."""
    with app.store.session() as session:
        customer = service.customer_by_name(session, name)
        data = dict(service.customer_dict(customer), webhook_url=customer.webhook_url)
        data["keys"] = [key_service.key_dict(k, n) for k, n in
                        key_service.list_keys(session, customer.id)]
    if as_json:
        emit_json(data)
        return

    for field in ("name", "status", "created_at", "webhook_url"):
        click.echo(f"{field}: {_text(data[field])}")
    click.echo()
    emit_table(data["keys"], ["prefix", "label", "active", "created_at", "revoked_at"])


def _text(value) -> str:
    if value is None:
        return "-"
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _set_status(app: AppContext, name: str, status: str) -> None:
    with app.store.session() as session:
        service.set_customer_status(session, name, status)
    click.echo(f"customer {name} is {status}")


@customers.command("disable")
@click.argument("name")
@pass_app
@user_errors
def customers_disable(app: AppContext, name: str):
    """Refuse the customer's API keys (403); its data and bindings stay."""
    _set_status(app, name, "disabled")


@customers.command("enable")
@click.argument("name")
@pass_app
@user_errors
def customers_enable(app: AppContext, name: str):
    """Undo `disable`."""
    _set_status(app, name, "active")


@customers.group("webhook")
def webhook():
    """The URL call events are POSTed to."""


@webhook.command("set")
@click.argument("name")
@click.argument("url")
@click.option("--rotate-secret", is_flag=True, help="Issue a new signing secret.")
@pass_app
@user_errors
def webhook_set(app: AppContext, name: str, url: str, rotate_secret: bool):
    """Set NAME's webhook URL; prints the signing secret when it is created or rotated."""
    checked = WebhookPolicy(app.settings.api).check(url)
    with app.store.session() as session:
        customer = service.customer_by_name(session, name)
        session.refresh(customer, with_for_update=True)
        stored = set_webhook(session, customer, checked, now=utcnow(),
                             rotate_secret=rotate_secret)
    click.echo(f"webhook of {name}: {stored.url}")
    if stored.skipped:
        click.echo(f"{stored.skipped} events of earlier calls skipped: they are not sent")
    if stored.secret:
        click.echo(f"signing secret (shown once): {stored.secret}")


@webhook.command("clear")
@click.argument("name")
@pass_app
@user_errors
def webhook_clear(app: AppContext, name: str):
    """Remove NAME's webhook; its events from now on are skipped."""
    with app.store.session() as session:
        clear_webhook(session, service.customer_by_name(session, name))
    click.echo(f"webhook of {name} removed")


@click.group()
def keys():
    """API keys: shown once when created, stored hashed."""


@keys.command("create")
@click.option("--customer", "name", default=None,
              help="The key's customer (default: the global --customer).")
@click.option("--label", default=None, help="What the key is for, shown in listings.")
@pass_app
@user_errors
def keys_create(app: AppContext, name: str | None, label: str | None):
    """Create a key and print it: it cannot be shown again."""
    with app.store.session() as session:
        customer = service.customer_by_name(session, name or app.customer_name)
        row, key = key_service.create_key(session, customer, label=label, now=utcnow())
    click.echo(key)
    click.echo(f"key {row.prefix} for {customer.name}: store it now, it is not shown again",
               err=True)


@keys.command("revoke")
@click.argument("prefix")
@pass_app
@user_errors
def keys_revoke(app: AppContext, prefix: str):
    """Revoke the key starting with PREFIX (as `keys list` shows it): its requests get 403."""
    with app.store.session() as session:
        row = key_service.revoke_key(session, prefix, now=utcnow())
    click.echo(f"key {row.prefix} revoked")


@keys.command("list")
@click.option("--customer", "name", default=None, help="Only this customer's keys.")
@click.option("--json", "as_json", is_flag=True)
@pass_app
@user_errors
def keys_list(app: AppContext, name: str | None, as_json: bool):
    """Keys by prefix, customer, label and state; never the keys themselves."""
    with app.store.session() as session:
        customer_id = service.customer_by_name(session, name).id if name else None
        rows = [key_service.key_dict(k, n) for k, n in
                key_service.list_keys(session, customer_id)]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["prefix", "customer", "label", "active", "created_at"])
