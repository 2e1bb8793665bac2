"""The webhook pusher: delivers the ``call_events`` outbox to each customer's webhook.

State lives in the database only, so a restart loses nothing. A pusher claims due events by
moving their ``next_attempt_at`` one lease ahead (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
several API processes share the work), POSTs each, then marks it delivered or schedules the
next attempt with exponential backoff. A pusher stopped mid-delivery leaves the event due
again when its lease runs out: delivery is at least once, always with the same event id.

Events of a customer without a webhook are marked skipped (``delivered_at`` set,
``last_error`` = ``skipped: no webhook``) rather than kept: registering a webhook later
does not replay a backlog of old calls (``webhook_config.set_webhook`` skips those recorded
while no pusher ran).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import or_, select, update

from .. import __version__
from ..config import Settings
from ..errors import StorageUnavailable
from ..storage import Store
from ..storage.db import as_utc, utcnow
from ..storage.tables import CallEvent, Customer
from . import signing
from .public import public_record
from .targets import Resolver, WebhookPolicy, WebhookRefused, system_resolver

logger = logging.getLogger(__name__)

SKIPPED = "skipped: no webhook"
BACKOFF_FIRST_S = 10
BACKOFF_MAX_S = 3600


def backoff_s(attempts: int) -> int:
    """10 s, 20 s, 40 s ... capped at an hour; the event is retried until delivered."""
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, attempts - 1))


@dataclass(frozen=True)
class Delivery:
    row_id: int
    customer_id: int
    event_id: str
    kind: str
    at: datetime
    payload: dict
    url: str
    secret: str
    attempt: int

    def body(self) -> bytes:
        envelope = {"id": self.event_id, "type": f"call.{self.kind}",
                    "occurred_at": as_utc(self.at).isoformat(),
                    "data": public_record(self.payload)}
        return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


class WebhookPusher:
    """One loop per process; ``run_once`` does one pass and is what tests drive."""

    def __init__(self, store: Store, settings: Settings, *, clock: Callable[[], datetime] = utcnow,
                 resolver: Resolver = system_resolver, verify: ssl.SSLContext | bool = True,
                 batch: int = 50, poll_s: float = 1.0, lease_s: int = 60,
                 timeout_s: float = 10.0):
        self.store = store
        self.policy = WebhookPolicy(settings.api, resolver)
        self.clock = clock
        self.verify = verify
        self.batch = batch
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.timeout_s = timeout_s

    async def run(self, stop: asyncio.Event) -> None:
        logger.info("webhook pusher started")
        async with self._client() as client:
            while not stop.is_set():
                try:
                    done = await self.run_once(client)
                except StorageUnavailable:
                    logger.warning("webhook pusher: database unavailable; retrying")
                    done = 0
                except Exception:
                    logger.exception("webhook pusher: pass failed; retrying")
                    done = 0
                if done == 0:
                    try:
                        await asyncio.wait_for(stop.wait(), self.poll_s)
                    except TimeoutError:
                        pass
        logger.info("webhook pusher stopped")

    def _client(self) -> httpx.AsyncClient:
        # No environment proxies (they would resolve the host a second time), no redirects,
        # and no kept-alive connections: a pooled TLS connection to one address must not
        # carry a request for another host name that resolves to the same address.
        return httpx.AsyncClient(
            trust_env=False, follow_redirects=False, verify=self.verify,
            timeout=self.timeout_s, limits=httpx.Limits(max_keepalive_connections=0),
            headers={"User-Agent": f"pbx-control-webhooks/{__version__}"})

    async def run_once(self, client: httpx.AsyncClient | None = None) -> int:
        """Claim the due events and try each once; returns how many were handled."""
        deliveries = await asyncio.to_thread(self._claim, self.clock())
        if not deliveries:
            return 0
        if client is None:
            async with self._client() as own:
                return await self._deliver_all(own, deliveries)
        return await self._deliver_all(client, deliveries)

    async def _deliver_all(self, client, deliveries: list[Delivery]) -> int:
        # Customers in parallel, so one slow receiver does not hold up the others; each
        # customer's events one after the other, in the order they happened.
        queues: dict[int, list[Delivery]] = {}
        for delivery in deliveries:
            queues.setdefault(delivery.customer_id, []).append(delivery)
        await asyncio.gather(*(self._deliver_in_order(client, q) for q in queues.values()))
        return len(deliveries)

    async def _deliver_in_order(self, client, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            error = await self._deliver(client, delivery)
            await asyncio.to_thread(self._finish, delivery, error, self.clock())

    def _claim(self, now: datetime) -> list[Delivery]:
        with self.store.session() as session:
            self._skip_unhooked(session, now)
            query = (select(CallEvent).where(
                CallEvent.delivered_at.is_(None),
                or_(CallEvent.next_attempt_at.is_(None), CallEvent.next_attempt_at <= now))
                .order_by(CallEvent.next_attempt_at, CallEvent.id).limit(self.batch))
            if self.store.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            events = list(session.scalars(query))
            return [d for d in (self._lease(session, e, now) for e in events) if d]

    @staticmethod
    def _skip_unhooked(session, now: datetime) -> None:
        """Mark skipped, in one statement, the pending events nobody is listening for."""
        hooked = select(Customer.id).where(Customer.webhook_url.is_not(None),
                                           Customer.webhook_secret.is_not(None))
        session.execute(
            update(CallEvent)
            .where(CallEvent.delivered_at.is_(None),
                   or_(CallEvent.customer_id.is_(None), CallEvent.customer_id.not_in(hooked)))
            .values(delivered_at=now, last_error=SKIPPED),
            execution_options={"synchronize_session": False})

    def _lease(self, session, event: CallEvent, now: datetime) -> Delivery | None:
        customer = session.get(Customer, event.customer_id) if event.customer_id else None
        if customer is None or not customer.webhook_url or not customer.webhook_secret:
            event.delivered_at = now
            event.last_error = SKIPPED
            return None

        event.next_attempt_at = now + timedelta(seconds=self.lease_s)
        return Delivery(event.id, customer.id, event.event_id, event.kind, event.at,
                        event.payload, customer.webhook_url, customer.webhook_secret,
                        event.attempts + 1)

    async def _deliver(self, client: httpx.AsyncClient, delivery: Delivery) -> str | None:
        """POST one event; None when the receiver took it, else why not."""
        try:
            target = await asyncio.wait_for(
                asyncio.to_thread(self.policy.check, delivery.url), self.timeout_s)
        except WebhookRefused as exc:
            logger.warning("event %s: webhook refused: %s", delivery.event_id, exc.message)
            return f"refused: {exc.message}"
        except TimeoutError:
            return "refused: the host name did not resolve in time"

        body = delivery.body()
        timestamp = str(int(self.clock().timestamp()))
        request = client.build_request(
            "POST", target.request_url(), content=body, headers=self._headers(
                delivery, target.host_header(), timestamp, body),
            extensions={"sni_hostname": target.host} if target.url.scheme == "https" else {})
        try:
            # httpx's timeout bounds each read; this bounds the whole exchange, so a receiver
            # trickling bytes cannot hold the event past its lease.
            response = await asyncio.wait_for(client.send(request), self.timeout_s)
            await response.aclose()
        except TimeoutError:
            logger.warning("event %s: receiver too slow", delivery.event_id)
            return f"timeout after {self.timeout_s:g} s"
        except httpx.HTTPError as exc:
            logger.warning("event %s: delivery failed: %s", delivery.event_id,
                           type(exc).__name__)
            return f"{type(exc).__name__}: {str(exc)[:200]}"
        if 200 <= response.status_code < 300:
            return None
        logger.warning("event %s: receiver answered %s", delivery.event_id,
                       response.status_code)
        return f"HTTP {response.status_code}"

    @staticmethod
    def _headers(delivery: Delivery, host: str, timestamp: str, body: bytes) -> dict:
        return {
            "Host": host,
            "Content-Type": "application/json",
            signing.EVENT_ID_HEADER: delivery.event_id,
            signing.TIMESTAMP_HEADER: timestamp,
            signing.SIGNATURE_HEADER: signing.signature(delivery.secret, timestamp, body),
            signing.ATTEMPT_HEADER: str(delivery.attempt),
        }

    def _finish(self, delivery: Delivery, error: str | None, now: datetime) -> None:
        with self.store.session() as session:
            event = session.get(CallEvent, delivery.row_id, with_for_update=True)
            if event is None or event.delivered_at is not None:
                return
            event.attempts = event.attempts + 1
            if error is None:
                event.delivered_at = now
                event.last_error = None
                logger.debug("event %s delivered", delivery.event_id)
                return
            event.last_error = error[:1000]
            event.next_attempt_at = now + timedelta(seconds=backoff_s(event.attempts))
