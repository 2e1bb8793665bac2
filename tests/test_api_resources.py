"""Numbers, calls (with recordings), blacklist, webhook settings, health and the OpenAPI
document, over real HTTP against PostgreSQL (a smoke set also on SQLite)."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path

import pytest
from api_support import LiveServer, make_tenant

from pbx_control.api.app import create_app
from pbx_control.api.openapi import dumps
from pbx_control.calls import CallService
from pbx_control.config import Settings
from pbx_control.storage import Store

A, B, C = "+8613800000001", "+8613800000002", "+8613800000003"
X1, X2, X3 = "+8613900000001", "+8613900000002", "+8613900000003"
OPENAPI = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


@pytest.fixture
def local(settings, tmp_path):
    settings.api.rate_limit_per_s = 1000
    settings.api.rate_limit_burst = 1000
    settings.api.webhook_allow_http = True
    settings.api.webhook_allow_networks = ["127.0.0.0/8"]
    settings.freeswitch.recordings_dir = str(tmp_path / "recordings")
    return settings


ANSWERS = {"hooks.example.test": ["127.0.0.1"], "private.example.test": ["10.0.0.7"]}


def resolve(host: str, port: int) -> list[str]:
    if host not in ANSWERS:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return ANSWERS[host]


@pytest.fixture
def api(pg_store, local):
    app = create_app(pg_store, local, resolver=resolve)
    with LiveServer(app) as server:
        yield server


@pytest.fixture
def acme(pg_store):
    return make_tenant(pg_store, "acme", [X1, X2])


@pytest.fixture
def client(api, acme):
    with api.client(acme.key) as client:
        yield client


def code(response) -> tuple[int, str | None]:
    body = response.json() if response.content else {}
    return response.status_code, body.get("code") if isinstance(body, dict) else None


# -- numbers ------------------------------------------------------------------------------------


def test_numbers_list_filters_pages_and_counts(pg_store, client, acme):
    make_tenant(pg_store, "rival", [X3])
    client.post("/v1/bindings", json={"mode": "ax", "a": A, "x": X2})

    page = client.get("/v1/numbers", params={"limit": 1}).json()
    assert [n["x"] for n in page["items"]] == [X1] and page["next_cursor"]
    rest = client.get("/v1/numbers", params={"cursor": page["next_cursor"]}).json()
    assert [n["x"] for n in rest["items"]] == [X2] and rest["next_cursor"] is None

    dedicated = client.get("/v1/numbers", params={"state": "dedicated"}).json()["items"]
    assert [n["x"] for n in dedicated] == [X2]
    assert client.get("/v1/numbers", params={"city": "Nowhere"}).json()["items"] == []
    assert code(client.get("/v1/numbers", params={"state": "gone"})) == (400, "invalid_input")

    counts = client.get("/v1/numbers/counts").json()
    assert sorted((c["state"], c["count"]) for c in counts) == [("available", 1),
                                                               ("dedicated", 1)]


# -- calls --------------------------------------------------------------------------------------


def place_call(store, settings, caller: str, x: str, recording: str | None = None) -> str:
    """A call through the real routing path, as an adapter would report it."""
    service = CallService(store, settings, pbx="freeswitch", node="fs1")
    routed = service.route_inbound(caller, x, "uuid-" + caller[-4:])
    if routed.decision.connected:
        service.call_event(routed.record_id, "answered")
        service.call_event(routed.record_id, "ended", outcome="answered", hangup_by="caller",
                           recording_path=recording)
    return routed.record_id


def test_calls_are_listed_newest_first_filtered_and_paged(pg_store, local, client):
    bound = client.post("/v1/bindings", json={"mode": "axb", "a": A, "b": B, "x": X1,
                                              "out_id": "trip-9"}).json()
    first = place_call(pg_store, local, A, X1)
    refused = place_call(pg_store, local, C, X1)

    page = client.get("/v1/calls", params={"limit": 1}).json()
    assert [c["id"] for c in page["items"]] == [refused]
    assert page["items"][0]["decision"] == "refuse" and page["next_cursor"]
    rest = client.get("/v1/calls", params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert [c["id"] for c in rest["items"]] == [first] and rest["next_cursor"] is None

    by_binding = client.get("/v1/calls", params={"binding_id": bound["id"]}).json()["items"]
    assert [c["id"] for c in by_binding] == [first]
    assert [c["id"] for c in client.get("/v1/calls", params={"out_id": "trip-9"})
            .json()["items"]] == [first]
    one = client.get(f"/v1/calls/{first}").json()
    assert one["outcome"] == "answered" and one["has_recording"] is False
    assert "recording_path" not in one
    assert code(client.get("/v1/calls", params={"since": "2026-01-01T00:00:00"})) == \
        (400, "invalid_input")
    assert code(client.get("/v1/calls", params={"cursor": "garbage"})) == (400, "invalid_input")


def test_a_recording_is_streamed_for_the_own_call_only(pg_store, local, api, client):
    client.post("/v1/bindings", json={"mode": "axb", "a": A, "b": B, "x": X1})
    folder = Path(local.freeswitch.recordings_dir)
    folder.mkdir()
    audio = folder / "call.wav"
    audio.write_bytes(b"RIFF" + bytes(range(256)) * 64)
    recorded = place_call(pg_store, local, A, X1, recording=str(audio))
    plain = place_call(pg_store, local, B, X1)

    response = client.get(f"/v1/calls/{recorded}/recording")
    assert response.status_code == 200 and response.content == audio.read_bytes()
    assert response.headers["content-type"] == "audio/wav"
    assert code(client.get(f"/v1/calls/{plain}/recording")) == (404, "no_recording")

    rival = make_tenant(pg_store, "rival", [X3])
    with api.client(rival.key) as other:
        assert code(other.get(f"/v1/calls/{recorded}/recording")) == (404, "not_found")
        assert code(other.get(f"/v1/calls/{recorded}")) == (404, "not_found")
        assert other.get("/v1/calls").json()["items"] == []


def test_a_recording_outside_the_recordings_directory_is_not_served(pg_store, local,
                                                                    client, tmp_path):
    client.post("/v1/bindings", json={"mode": "axb", "a": A, "b": B, "x": X1})
    outside = tmp_path / "settings.sqlite"
    outside.write_bytes(b"not for customers")
    recorded = place_call(pg_store, local, A, X1, recording=str(outside))
    assert code(client.get(f"/v1/calls/{recorded}/recording")) == (404, "no_recording")


# -- blacklist ----------------------------------------------------------------------------------


def test_blacklist_entries_are_added_listed_and_removed(client, api, pg_store):
    everywhere = client.post("/v1/blacklist", json={"number": C, "reason": "spam"})
    on_x1 = client.post("/v1/blacklist", json={"number": B, "x": X1})
    assert everywhere.status_code == on_x1.status_code == 201
    assert on_x1.json()["scope"] == "x" and everywhere.json()["x"] is None

    assert {e["number"] for e in client.get("/v1/blacklist").json()} == {B, C}
    assert [e["number"] for e in client.get("/v1/blacklist", params={"x": X1}).json()] == [B]
    assert code(client.post("/v1/blacklist", json={"number": C})) == (409,
                                                                     "blacklisted_already")
    assert code(client.post("/v1/blacklist", json={"number": A, "x": X3})) == (404,
                                                                              "not_found")

    rival = make_tenant(pg_store, "rival", [X3])
    with api.client(rival.key) as other:
        assert other.get("/v1/blacklist").json() == []
        assert code(other.delete("/v1/blacklist/%2B8613800000003")) == (404, "not_found")

    assert client.delete("/v1/blacklist/%2B8613800000003").status_code == 204
    assert client.delete("/v1/blacklist/%2B8613800000002", params={"x": X1}).status_code == 204
    assert client.get("/v1/blacklist").json() == []


# -- webhook settings ---------------------------------------------------------------------------


def test_the_webhook_secret_is_shown_once_and_rotated_on_request(client):
    created = client.put("/v1/webhook", json={"url": "http://hooks.example.test:8443/in"})
    assert created.status_code == 200, created.text
    secret = created.json()["secret"]
    assert secret.startswith("whsec_")

    again = client.put("/v1/webhook", json={"url": "http://hooks.example.test/other"})
    assert again.json() == {"url": "http://hooks.example.test/other", "secret": None}
    assert client.get("/v1/webhook").json()["secret"] is None

    rotated = client.put("/v1/webhook", json={"url": "http://hooks.example.test/other",
                                              "rotate_secret": True}).json()["secret"]
    assert rotated and rotated != secret

    assert client.delete("/v1/webhook").status_code == 204
    assert client.get("/v1/webhook").json() == {"url": None, "secret": None}
    assert code(client.delete("/v1/webhook")) == (404, "not_found")


@pytest.mark.parametrize("url", ["http://private.example.test/in", "http://10.1.1.1/in",
                                 "http://169.254.169.254/latest", "ftp://hooks.example.test/",
                                 "http://unknown.example.test/"])
def test_a_webhook_pointing_inside_is_refused_with_422(client, url):
    response = client.put("/v1/webhook", json={"url": url})
    assert code(response) == (422, "webhook_refused") and response.json()["field"] == "url"
    assert client.get("/v1/webhook").json()["url"] is None


# -- health, unknown routes, the document --------------------------------------------------------


def test_healthz_needs_no_key_and_reports_the_database(api):
    with api.client() as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok", "database": "ok"}
        assert code(anonymous.get("/v1/nothing-here")) == (404, "not_found")


def test_healthz_is_503_when_the_database_is_unreachable(local):
    store = Store("postgresql://postgres@127.0.0.1:1/none")
    with LiveServer(create_app(store, local)) as server, server.client() as anonymous:
        assert code(anonymous.get("/healthz")) == (503, "storage_unavailable")
    store.dispose()


def test_every_resource_works_on_sqlite_too(sqlite_store, local):
    tenant = make_tenant(sqlite_store, "acme", [X1])
    with LiveServer(create_app(sqlite_store, local)) as server, server.client(tenant.key) as c:
        bound = c.post("/v1/bindings", json={"mode": "axb", "a": A, "b": B},
                       headers={"Idempotency-Key": "k"})
        again = c.post("/v1/bindings", json={"mode": "axb", "a": A, "b": B},
                       headers={"Idempotency-Key": "k"})
        assert (bound.status_code, again.json()) == (201, bound.json())
        assert [n["x"] for n in c.get("/v1/numbers").json()["items"]] == [X1]
        assert c.get("/v1/calls").json() == {"items": [], "next_cursor": None}
        assert c.delete(f"/v1/bindings/{bound.json()['id']}").status_code == 200


def test_the_checked_in_openapi_document_matches_the_app():
    current = dumps(create_app(None, Settings()))
    assert OPENAPI.read_text(encoding="utf-8") == current, (
        "docs/openapi.json is stale: python -m pbx_control.api.openapi > docs/openapi.json")
    assert "/v1/bindings" in json.loads(current)["paths"]


def test_the_document_is_served_at_a_stable_path(api):
    with api.client() as anonymous:
        served = anonymous.get("/v1/openapi.json").json()
    assert served["info"]["title"] == "pbx-control API"
    assert "Problem" in served["components"]["schemas"]


# -- logs and the unexpected ----------------------------------------------------------------------


def test_no_log_line_names_a_number_and_a_crash_is_a_500_problem(client, caplog, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError(f"database said something about {A}")

    monkeypatch.setattr("pbx_control.api.routes_pool.number_counts", crash)
    caplog.set_level(logging.INFO, logger="pbx_control")

    crashed = client.get("/v1/numbers/counts")
    listed = client.get("/v1/bindings", params={"party": A})
    removed = client.delete("/v1/blacklist/%2B8613800000001")

    assert code(crashed) == (500, "internal") and "Traceback" not in crashed.text
    assert (listed.status_code, code(removed)) == (200, (404, "not_found"))
    assert "GET /v1/numbers/counts: unexpected RuntimeError" in caplog.text
    assert "GET /v1/bindings 200" in caplog.text
    # The server thread writes its log line after the answer has gone out: poll for it.
    deadline = time.monotonic() + 5
    while "DELETE /v1/blacklist/{number} 404" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "DELETE /v1/blacklist/{number} 404" in caplog.text
    assert A[1:] not in caplog.text and A[-8:] not in caplog.text
