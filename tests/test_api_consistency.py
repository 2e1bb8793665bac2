"""Every refusal has a stable, documented code: unreadable bodies, forged cursors, empty or
removing patches; /v1/calls takes the times the CLI takes. Over real HTTP on PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from api_support import LiveServer, make_tenant, refused_call
from sqlalchemy import func, select

from pbx_control.api.app import create_app
from pbx_control.api.problems import HTTP_CODES
from pbx_control.storage.tables import Binding

A, B = "+8613800000001", "+8613800000002"
X1, X2, X3, X4 = "+8613900000001", "+8613900000002", "+8613900000003", "+8613900000004"
API_MD = Path(__file__).resolve().parents[1] / "docs" / "api.md"


@pytest.fixture
def api(pg_store, settings):
    settings.api.rate_limit_per_s = 1000
    settings.api.rate_limit_burst = 1000
    with LiveServer(create_app(pg_store, settings)) as server:
        yield server


@pytest.fixture
def acme(pg_store):
    return make_tenant(pg_store, "acme", [X1, X2])


@pytest.fixture
def client(api, acme):
    with api.client(acme.key) as client:
        yield client


def refused(response, status: int, code: str, field: str | None = "-") -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert (body["code"], body["status"]) == (code, status), body
    if field != "-":
        assert body["field"] == field, body
    return body["detail"]


def bindings(store) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(Binding))


# -- unreadable bodies ------------------------------------------------------------------------


@pytest.mark.parametrize("body, detail", [
    (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b'{"mode": "axb", "a": ' + b"1" * 5000 + b"}", "number too long"),
    (b'{"mode": "axb", "a": "\xff\xfe"}', "not UTF-8"),
], ids=["deep", "long-integer", "not-utf8"])
def test_a_body_json_cannot_read_is_400_invalid_json(client, pg_store, body, detail):
    response = client.post("/v1/bindings", content=body,
                           headers={"Content-Type": "application/json"})

    assert detail in refused(response, 400, "invalid_json", None)
    assert bindings(pg_store) == 0


def test_every_code_the_http_layer_answers_is_in_the_documented_table():
    table = API_MD.read_text(encoding="utf-8").split("## Errors", 1)[1]
    documented = set(re.findall(r"`([a-z_]+)`", table.split("\n\n| status", 1)[1]))
    assert set(HTTP_CODES.values()) <= documented
    assert {"too_large", "invalid_json", "invalid_input"} <= documented


# -- cursors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path, cursor", [
    ("/v1/bindings", "b0zzzzzzzzzzzzzzzzzzzzzzzzzz"),
    ("/v1/numbers", "999999"),
    ("/v1/calls", "bm90LWEtY3Vyc29y"),
])
def test_a_forged_cursor_is_400_on_cursor_not_an_empty_page(client, path, cursor):
    refused(client.get(path, params={"cursor": cursor}), 400, "invalid_input", "cursor")


def test_another_customers_cursor_is_refused(api, pg_store, client):
    rival = make_tenant(pg_store, "rival", [X3, X4])
    with api.client(rival.key) as other:
        binding = other.post("/v1/bindings", json={"mode": "ax", "a": A}).json()["id"]
        number = other.get("/v1/numbers", params={"limit": 1}).json()["next_cursor"]

    refused(client.get("/v1/bindings", params={"cursor": binding}), 400, "invalid_input",
            "cursor")
    refused(client.get("/v1/numbers", params={"cursor": number}), 400, "invalid_input",
            "cursor")


def test_a_real_cursor_still_pages(client):
    for a in (A, B):
        assert client.post("/v1/bindings", json={"mode": "ax", "a": a}).status_code == 201
    first = client.get("/v1/numbers", params={"limit": 1}).json()
    rest = client.get("/v1/numbers", params={"limit": 1, "cursor": first["next_cursor"]})
    assert [n["x"] for n in first["items"] + rest.json()["items"]] == [X1, X2]


# -- patch ------------------------------------------------------------------------------------


def test_an_empty_patch_is_400_and_leaves_the_binding_as_it_was(client):
    created = client.post("/v1/bindings", json={"mode": "axb", "a": A, "b": B}).json()

    detail = refused(client.patch(f"/v1/bindings/{created['id']}", json={}), 400,
                     "invalid_input", None)

    assert "nothing to update" in detail
    assert client.get(f"/v1/bindings/{created['id']}").json() == created


@pytest.mark.parametrize("party", ["a", "b"])
def test_a_patch_removing_a_party_says_it_cannot_be_removed(client, party):
    created = client.post("/v1/bindings", json={"mode": "axb", "a": A, "b": B}).json()

    detail = refused(client.patch(f"/v1/bindings/{created['id']}", json={party: None}), 400,
                     "invalid_input", party)

    assert detail == f"{party}: cannot be removed; give a number to change it"
    assert client.get(f"/v1/bindings/{created['id']}").json() == created


# -- since and until ----------------------------------------------------------------------------


@pytest.fixture
def calls(pg_store, acme) -> dict[str, str]:
    now = datetime.now(UTC)
    return {age: refused_call(pg_store, acme.id, now - delta) for age, delta in
            [("3d", timedelta(days=3)), ("5h", timedelta(hours=5)),
             ("10m", timedelta(minutes=10))]}


def listed(client, **params) -> list[str]:
    response = client.get("/v1/calls", params=params)
    assert response.status_code == 200, response.text
    return [c["id"] for c in response.json()["items"]]


def test_since_and_until_take_durations_as_the_cli_does(client, calls):
    assert listed(client, since="1d") == [calls["10m"], calls["5h"]]
    assert listed(client, since="2h") == [calls["10m"]]
    assert listed(client, since="90s") == []
    assert listed(client, since="1w", until="1h") == [calls["5h"], calls["3d"]]


def test_since_takes_an_iso_time_with_its_zone(client, calls):
    six_hours_ago = datetime.now(UTC) - timedelta(hours=6)
    in_beijing = six_hours_ago.astimezone(timezone(timedelta(hours=8))).isoformat()

    assert listed(client, since=in_beijing) == [calls["10m"], calls["5h"]]
    assert listed(client, since=six_hours_ago.isoformat().replace("+00:00", "Z")) == [
        calls["10m"], calls["5h"]]


@pytest.mark.parametrize("value", ["yesterday", "2026-06-01T12:00:00", "1y", "-1d"])
def test_a_time_neither_form_takes_is_400_on_its_field(client, value):
    refused(client.get("/v1/calls", params={"since": value}), 400, "invalid_input", "since")
    refused(client.get("/v1/calls", params={"until": value}), 400, "invalid_input", "until")
