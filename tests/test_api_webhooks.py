"""The webhook pusher against a real local receiver: signing, retries, restarts, SSRF.

The receiver listens on 127.0.0.1, allowed through ``api.webhook_allow_networks`` like an
operator's allow-list. Refused addresses (private, link-local) are only ever classified,
never connected to: the refusal comes before any connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from api_support import Receiver, make_tenant, wait_for
from sqlalchemy import select

from pbx_control import records
from pbx_control.api import signing
from pbx_control.api.targets import WebhookPolicy
from pbx_control.api.webhook_config import set_webhook
from pbx_control.api.webhooks import SKIPPED, WebhookPusher, backoff_s
from pbx_control.config import ApiSettings
from pbx_control.storage.tables import CallEvent, Customer

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
A, B, X1 = "+8613800000001", "+8613800000002", "+8613900000001"
HOST = "hooks.example.test"


class Clock:
    """Starts a minute after the calls of ``a_call``, when their events are due."""

    def __init__(self, now: datetime = NOW + timedelta(minutes=1)):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Resolver:
    """Answers from a script, one answer per call; the last answer repeats."""

    def __init__(self, *answers: list[str]):
        self.answers = list(answers)
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def local_settings(settings):
    settings.api.webhook_allow_http = True
    settings.api.webhook_allow_networks = ["127.0.0.0/8"]
    return settings


@pytest.fixture
def tenant(pg_store):
    return make_tenant(pg_store, "acme", [X1])


def hook(store, tenant, url: str, settings, resolver=None) -> str:
    """Register ``url`` as the tenant's webhook; returns the signing secret."""
    policy = WebhookPolicy(settings.api, resolver or (lambda h, p: ["127.0.0.1"]))
    with store.session() as s:
        return set_webhook(s, s.get(Customer, tenant.id), policy.check(url), now=NOW).secret


def a_call(store, customer_id, kinds=("ringing", "answered", "ended"), recording=None) -> str:
    with store.session() as s:
        record = records.new_attempt(
            s, customer_id=customer_id, binding_id=None, out_id="trip-1", direction="inbound",
            x=X1, caller=A, callee=B, decision="connect", reason="a_to_b", pbx="freeswitch",
            node="fs1", call_uuid="uuid-1", started_at=NOW)
    for step, kind in enumerate(kinds, start=1):
        fields = {"outcome": "answered", "hangup_by": "caller"} if kind == "ended" else {}
        if recording and kind == "ended":
            fields["recording_path"] = recording
        with store.session() as s:
            records.call_event(s, record.id, kind, at=NOW + timedelta(seconds=step), **fields)
    return record.id


def events(store) -> list[CallEvent]:
    with store.session() as s:
        return list(s.scalars(select(CallEvent).order_by(CallEvent.id)))


def pusher(store, settings, clock=None, **kwargs) -> WebhookPusher:
    return WebhookPusher(store, settings, clock=clock or Clock(), **kwargs)


def run_once(p: WebhookPusher) -> int:
    return asyncio.run(p.run_once())


# -- delivery and signing ---------------------------------------------------------------------


@pytest.mark.parametrize("db", ["pg_store", "sqlite_store"])
def test_each_event_is_posted_once_signed_with_its_id_and_timestamp(request, db,
                                                                    local_settings):
    store = request.getfixturevalue(db)
    tenant = make_tenant(store, "acme", [X1])
    with Receiver() as receiver:
        secret = hook(store, tenant, receiver.url, local_settings)
        record_id = a_call(store, tenant.id, recording="/var/rec/secret-path.wav")
        clock = Clock()

        assert run_once(pusher(store, local_settings, clock)) == 3
        assert run_once(pusher(store, local_settings, clock)) == 0

    stored = events(store)
    assert [d.json()["type"] for d in receiver.deliveries] == [
        "call.ringing", "call.answered", "call.ended"]
    for delivery, event in zip(receiver.deliveries, stored, strict=True):
        headers = {k.lower(): v for k, v in delivery.headers.items()}
        assert headers["pbx-event-id"] == event.event_id == delivery.json()["id"]
        assert headers["pbx-timestamp"] == str(int(clock.now.timestamp()))
        assert signing.verify(secret, headers["pbx-timestamp"], delivery.body,
                              headers["pbx-signature"], now=clock.now.timestamp())
        assert event.delivered_at is not None and event.attempts == 1
    ended = receiver.deliveries[-1].json()["data"]
    assert ended["id"] == record_id and ended["outcome"] == "answered"
    assert ended["has_recording"] is True and "recording_path" not in ended
    assert "customer_id" not in ended


def test_a_signature_does_not_verify_with_another_secret_body_or_an_old_timestamp():
    body = b'{"id":"e1"}'
    header = signing.signature("whsec_one", "1700000000", body)
    assert signing.verify("whsec_one", "1700000000", body, header, now=1700000100)
    assert not signing.verify("whsec_two", "1700000000", body, header, now=1700000100)
    assert not signing.verify("whsec_one", "1700000000", body + b" ", header, now=1700000100)
    assert not signing.verify("whsec_one", "1700000000", body, header, now=1700001000)


def test_events_of_a_customer_without_a_webhook_are_marked_skipped(pg_store, local_settings,
                                                                   tenant):
    a_call(pg_store, tenant.id, kinds=("refused",))

    assert run_once(pusher(pg_store, local_settings)) == 0
    [event] = events(pg_store)
    assert event.delivered_at is not None and event.last_error == SKIPPED
    assert event.attempts == 0


def test_skipped_events_do_not_hold_up_those_of_hooked_customers(pg_store, local_settings,
                                                                 tenant):
    quiet = make_tenant(pg_store, "quiet")
    for _ in range(30):
        a_call(pg_store, quiet.id, kinds=("refused",))
    with Receiver() as receiver:
        hook(pg_store, tenant, receiver.url, local_settings)
        a_call(pg_store, tenant.id, kinds=("refused",))

        assert run_once(pusher(pg_store, local_settings, batch=5)) == 1

    assert len(receiver.deliveries) == 1
    assert sum(e.last_error == SKIPPED for e in events(pg_store)) == 30


# -- retries and restarts ---------------------------------------------------------------------


def test_a_failed_delivery_is_retried_with_backoff_under_the_same_event_id(
        pg_store, local_settings, tenant):
    clock = Clock()
    with Receiver(answers=[500]) as receiver:
        hook(pg_store, tenant, receiver.url, local_settings)
        a_call(pg_store, tenant.id, kinds=("refused",))

        run_once(pusher(pg_store, local_settings, clock))
        [event] = events(pg_store)
        assert event.delivered_at is None and event.attempts == 1
        assert event.last_error == "HTTP 500"
        assert event.next_attempt_at == clock.now + timedelta(seconds=backoff_s(1))

        assert run_once(pusher(pg_store, local_settings, clock)) == 0, "retried too early"
        clock.advance(backoff_s(1))
        assert run_once(pusher(pg_store, local_settings, clock)) == 1

    [event] = events(pg_store)
    assert event.delivered_at is not None and event.attempts == 2
    ids = [d.headers["Pbx-Event-Id"] for d in receiver.deliveries]
    assert ids == [event.event_id] * 2
    assert [d.headers["Pbx-Delivery-Attempt"] for d in receiver.deliveries] == ["1", "2"]


def test_backoff_doubles_up_to_an_hour():
    assert [backoff_s(n) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert backoff_s(30) == 3600


def test_an_event_in_flight_when_the_pusher_stops_is_delivered_by_the_next_one(
        pg_store, local_settings, tenant):
    clock = Clock()
    hold = threading.Event()
    with Receiver(hold=hold) as receiver:
        hook(pg_store, tenant, receiver.url, local_settings)
        a_call(pg_store, tenant.id, kinds=("refused",))

        async def stopped_mid_delivery():
            task = asyncio.create_task(pusher(pg_store, local_settings, clock).run(
                asyncio.Event()))
            while not receiver.deliveries:
                await asyncio.sleep(0.02)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        asyncio.run(stopped_mid_delivery())
        [event] = events(pg_store)
        assert event.delivered_at is None, "the interrupted delivery must not count"
        hold.set()

        restarted = pusher(pg_store, local_settings, clock)
        assert run_once(restarted) == 0, "the lease of the stopped pusher still holds"
        clock.advance(restarted.lease_s)
        assert run_once(restarted) == 1

    [event] = events(pg_store)
    assert event.delivered_at is not None and event.attempts == 1
    assert [d.headers["Pbx-Event-Id"] for d in receiver.deliveries] == [event.event_id] * 2


def test_the_pusher_loop_delivers_events_written_while_it_runs(pg_store, local_settings,
                                                               tenant):
    with Receiver() as receiver:
        hook(pg_store, tenant, receiver.url, local_settings)

        async def scenario():
            stop = asyncio.Event()
            task = asyncio.create_task(
                WebhookPusher(pg_store, local_settings, poll_s=0.05).run(stop))
            await asyncio.to_thread(a_call, pg_store, tenant.id, ("refused",))
            await asyncio.to_thread(wait_for, lambda: receiver.deliveries, 10, "a delivery")
            stop.set()
            await asyncio.wait_for(task, 10)

        asyncio.run(scenario())
    assert json.loads(receiver.deliveries[0].body)["type"] == "call.refused"


# -- the SSRF policy ----------------------------------------------------------------------------


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "224.0.0.1", "0.0.0.0", "240.0.0.1", "255.255.255.255", "::1", "fe80::1", "fc00::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::", "ff02::1", "not-an-address",
])
def test_non_public_addresses_are_refused(address):
    assert not WebhookPolicy(ApiSettings()).permitted(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"])
def test_public_addresses_are_permitted(address):
    assert WebhookPolicy(ApiSettings()).permitted(address)


def test_the_allow_list_admits_its_networks_only():
    policy = WebhookPolicy(ApiSettings(webhook_allow_networks=["127.0.0.0/8"]))
    assert policy.permitted("127.0.0.5") and not policy.permitted("10.0.0.1")


@pytest.mark.parametrize("url", [
    "http://hooks.example.com/x", "ftp://hooks.example.com/x", "https://user:pw@example.com/",
    "https:///nohost", "not a url",
])
def test_urls_other_than_plain_https_are_refused_by_default(url):
    policy = WebhookPolicy(ApiSettings(), resolver=lambda h, p: ["8.8.8.8"])
    with pytest.raises(Exception) as err:
        policy.check(url)
    assert getattr(err.value, "code", None) == "webhook_refused"


def test_a_host_resolving_to_any_private_address_is_refused():
    policy = WebhookPolicy(ApiSettings(), resolver=lambda h, p: ["8.8.8.8", "192.168.1.10"])
    with pytest.raises(Exception) as err:
        policy.check(f"https://{HOST}/hook")
    assert getattr(err.value, "code", None) == "webhook_refused"


def test_loopback_outside_the_allow_list_is_refused_at_delivery(pg_store, local_settings,
                                                                tenant):
    with Receiver() as receiver:
        hook(pg_store, tenant, receiver.url, local_settings)
        a_call(pg_store, tenant.id, kinds=("refused",))
        local_settings.api.webhook_allow_networks = []

        run_once(pusher(pg_store, local_settings))

    assert receiver.deliveries == []
    [event] = events(pg_store)
    assert event.delivered_at is None and event.last_error.startswith("refused:")


def test_a_name_resolving_to_a_private_address_is_refused_without_connecting(
        pg_store, local_settings, tenant):
    hook(pg_store, tenant, f"http://{HOST}/hook", local_settings)
    a_call(pg_store, tenant.id, kinds=("refused",))
    resolver = Resolver(["10.20.30.40"])

    run_once(pusher(pg_store, local_settings, resolver=resolver))

    [event] = events(pg_store)
    assert resolver.calls == [HOST]
    assert event.delivered_at is None and "10.20.30.40" in event.last_error


def test_the_request_goes_to_the_address_that_passed_the_check(pg_store, local_settings,
                                                               tenant):
    # The first answer passes; any later resolution would answer a private address (and
    # the system resolver does not know the name at all): only a single resolution, whose
    # address is then connected to, can reach the receiver.
    with Receiver() as receiver:
        hook(pg_store, tenant, f"http://{HOST}:{receiver.port}/hook", local_settings)
        a_call(pg_store, tenant.id, kinds=("ringing",))
        resolver = Resolver(["127.0.0.1"], ["10.9.9.9"])

        run_once(pusher(pg_store, local_settings, resolver=resolver))
        assert resolver.calls == [HOST]
        assert [d.headers["Host"] for d in receiver.deliveries] == [f"{HOST}:{receiver.port}"]

        # Checked at every delivery: the next event meets the changed answer and is refused.
        a_call(pg_store, tenant.id, kinds=("refused",))
        run_once(pusher(pg_store, local_settings, resolver=resolver))

    assert len(receiver.deliveries) == 1
    assert "10.9.9.9" in events(pg_store)[-1].last_error


def test_a_redirect_is_not_followed(pg_store, local_settings, tenant):
    with Receiver() as elsewhere, \
            Receiver(answers=[(302, {"Location": elsewhere.url})]) as receiver:
        hook(pg_store, tenant, receiver.url, local_settings)
        a_call(pg_store, tenant.id, kinds=("refused",))

        run_once(pusher(pg_store, local_settings))

    assert len(receiver.deliveries) == 1 and elsewhere.deliveries == []
    [event] = events(pg_store)
    assert event.delivered_at is None and event.last_error == "HTTP 302"


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def tls_receiver(ca, name: str) -> Receiver:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return Receiver(tls=context)


def trusting(ca) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def test_https_connects_to_the_checked_address_with_sni_and_the_certificate_of_the_name(
        pg_store, local_settings, tenant, ca):
    local_settings.api.webhook_allow_http = False
    with tls_receiver(ca, HOST) as receiver:
        resolver = Resolver(["127.0.0.1"], ["10.9.9.9"])
        hook(pg_store, tenant, f"https://{HOST}:{receiver.port}/hook", local_settings)
        a_call(pg_store, tenant.id, kinds=("refused",))

        run_once(pusher(pg_store, local_settings, resolver=resolver, verify=trusting(ca)))

    [event] = events(pg_store)
    assert event.delivered_at is not None, event.last_error
    assert resolver.calls == [HOST] and len(receiver.deliveries) == 1


def test_https_refuses_a_certificate_for_another_name(pg_store, local_settings, tenant, ca):
    with tls_receiver(ca, "other.example.test") as receiver:
        hook(pg_store, tenant, f"https://{HOST}:{receiver.port}/hook", local_settings)
        a_call(pg_store, tenant.id, kinds=("refused",))

        run_once(pusher(pg_store, local_settings, resolver=Resolver(["127.0.0.1"]),
                        verify=trusting(ca)))

    [event] = events(pg_store)
    assert event.delivered_at is None and receiver.deliveries == []
    assert event.last_error.startswith("ConnectError")


def test_the_receiver_in_the_docs_verifies_a_real_delivery(pg_store, local_settings, tenant):
    docs = Path(__file__).resolve().parents[1] / "docs" / "webhooks.md"
    code = docs.read_text(encoding="utf-8").split("```python\n", 1)[1].split("```", 1)[0]
    with Receiver() as receiver:
        secret = hook(pg_store, tenant, receiver.url, local_settings)
        a_call(pg_store, tenant.id, kinds=("refused",))
        run_once(WebhookPusher(pg_store, local_settings))  # the real clock: not stale

    namespace: dict = {}
    exec(code.replace('SECRET = "whsec_..."', f"SECRET = {secret!r}"), namespace)
    [delivery] = receiver.deliveries
    headers = {k.lower(): v for k, v in delivery.headers.items()}

    assert namespace["verify"](headers, delivery.body)["type"] == "call.refused"
    with pytest.raises(ValueError, match="bad signature"):
        namespace["verify"](headers, delivery.body.replace(b"refused", b"answered"))
