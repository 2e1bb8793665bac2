"""Helpers for the API tests: the API on a real uvicorn server, a webhook receiver, tenants.

Both servers listen on 127.0.0.1 port 0 in a thread of the test process and are stopped by
the test; waits poll a condition with a deadline.
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import uvicorn

from pbx_control import customers, keys, pool, records
from pbx_control.storage import Store


def wait_for(condition, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1:0 in a thread."""

    def __init__(self, app):
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                lifespan="on", proxy_headers=False, access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_for(lambda: self.server.started, what="uvicorn to start")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)

    def client(self, key: str | None = None, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=20, **kwargs)


@dataclass
class Tenant:
    id: int
    name: str
    key: str


def make_tenant(store: Store, name: str, numbers: list[str] = (), city: str = "Beijing",
                now: datetime | None = None) -> Tenant:
    now = now or datetime.now(UTC)
    with store.session() as session:
        customer = customers.create_customer(session, name, now)
        _, key = keys.create_key(session, customer, label="tests", now=now)
        if numbers:
            pool.add_numbers(session, customer.id, numbers, city=city, now=now)
        return Tenant(customer.id, customer.name, key)


def refused_call(store: Store, customer_id: int, at: datetime, x: str = "+8613900000001",
                 caller: str = "+8613800000009") -> str:
    """A call the controller refused, as it records one: the record and its one event."""
    with store.session() as session:
        record = records.new_attempt(
            session, customer_id=customer_id, binding_id=None, out_id=None,
            direction="inbound", x=x, caller=caller, callee=None, decision="refuse",
            reason="no_binding", pbx="freeswitch", node="fs1", call_uuid=None,
            started_at=at)
        records.call_event(session, record.id, "refused", at=at)
        return record.id


@dataclass
class Delivery:
    path: str
    headers: dict
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver: records every POST and answers from ``answers`` (then 200)."""

    answers: list = field(default_factory=list)
    tls: ssl.SSLContext | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    hold: threading.Event | None = None

    def __enter__(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                receiver.deliveries.append(Delivery(self.path, dict(self.headers), body))
                if receiver.hold is not None:
                    receiver.hold.wait(30)
                status, headers = receiver._answer()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if self.tls is not None:
            self.httpd.socket = self.tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def _answer(self):
        if self.answers:
            answer = self.answers.pop(0)
            return answer if isinstance(answer, tuple) else (answer, {})
        return 200, {}

    def __exit__(self, *exc) -> None:
        if self.hold is not None:
            self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/hook"
