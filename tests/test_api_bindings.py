"""The HTTP API over real HTTP against PostgreSQL: keys, bindings, idempotency, isolation.

Each refusal checks the problem document (status, code, field, a masked message) and that
the database did not change.
"""

from __future__ import annotations

import threading

import pytest
from api_support import LiveServer, make_tenant
from sqlalchemy import func, select

from pbx_control import customers, keys
from pbx_control.api.app import create_app
from pbx_control.storage.db import utcnow
from pbx_control.storage.tables import Binding, BindingParty, IdempotencyKey

A, B, C = "+8613800000001", "+8613800000002", "+8613800000003"
X1, X2, X3 = "+8613900000001", "+8613900000002", "+8613900000003"


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


def rows(store) -> tuple:
    with store.session() as s:
        return (s.scalar(select(func.count()).select_from(Binding)),
                s.scalar(select(func.count()).select_from(BindingParty)),
                s.scalar(select(func.count()).select_from(IdempotencyKey)))


def problem(response, status: int, code: str, field: str | None = "-") -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert set(body) == {"type", "title", "status", "code", "field", "detail"}
    assert body["status"] == status and body["code"] == code, body
    if field != "-":
        assert body["field"] == field, body
    return body


def axb(client, headers=None, **extra):
    return client.post("/v1/bindings", json={"mode": "axb", "a": A, "b": B, **extra},
                       headers=headers)


# -- keys -------------------------------------------------------------------------------------


def test_a_request_without_a_key_is_401(api, acme):
    with api.client() as anonymous:
        problem(anonymous.get("/v1/bindings"), 401, "invalid_key")


@pytest.mark.parametrize("key", ["nonsense", "pbx_00000000_" + "A" * 43])
def test_an_unknown_key_is_401(api, acme, key):
    with api.client(key) as stranger:
        problem(stranger.get("/v1/bindings"), 401, "invalid_key")


def test_a_key_with_a_right_prefix_but_wrong_secret_is_401(api, acme):
    forged = acme.key[:13] + ("B" if acme.key[13] != "B" else "C") + acme.key[14:]
    with api.client(forged) as stranger:
        problem(stranger.get("/v1/bindings"), 401, "invalid_key")


def test_a_revoked_key_is_403(api, acme, pg_store, client):
    assert client.get("/v1/bindings").status_code == 200
    with pg_store.session() as s:
        keys.revoke_key(s, acme.key[:12], now=utcnow())
    problem(client.get("/v1/bindings"), 403, "key_revoked")


def test_a_disabled_customer_is_403(api, acme, pg_store, client):
    with pg_store.session() as s:
        customers.set_customer_status(s, "acme", "disabled")
    problem(client.get("/v1/numbers"), 403, "customer_disabled")


def test_keys_are_stored_only_as_a_hash(pg_store, acme):
    with pg_store.session() as s:
        stored = [k for k, _ in keys.list_keys(s)]
    assert stored and all(acme.key not in k.key_hash for k in stored)
    assert stored[0].key_hash.startswith("sha256$")


# -- bind ---------------------------------------------------------------------------------------


def test_bind_axb_on_an_explicit_x_answers_201_with_the_binding(client):
    response = axb(client, x=X1, out_id="trip-1", expires_at="2h", record=True)

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["mode"], body["x"], body["a"], body["b"]) == ("axb", X1, A, B)
    assert body["out_id"] == "trip-1" and body["record"] and body["active"]
    assert body["expires_at"] is not None
    assert client.get(f"/v1/bindings/{body['id']}").json() == body


def test_bind_allocates_an_x_of_the_city(api, pg_store, client):
    make_tenant(pg_store, "other", [X3], city="Shanghai")
    response = client.post("/v1/bindings", json={"mode": "axb", "a": A, "b": B,
                                                 "city": "Beijing"})
    assert response.status_code == 201, response.text
    assert response.json()["x"] in (X1, X2)


def test_an_exhausted_pool_is_409_and_writes_nothing(pg_store, client):
    assert client.post("/v1/bindings", json={"mode": "ax", "a": A}).status_code == 201
    assert client.post("/v1/bindings", json={"mode": "ax", "a": B}).status_code == 201
    before = rows(pg_store)

    problem(client.post("/v1/bindings", json={"mode": "ax", "a": C}), 409, "pool_exhausted")
    assert rows(pg_store) == before


def test_a_pair_already_bound_on_x_is_409(pg_store, client):
    assert axb(client, x=X1).status_code == 201
    before = rows(pg_store)
    problem(client.post("/v1/bindings", json={"mode": "axb", "a": A, "b": C, "x": X1}),
            409, "pair_in_use", "x")
    assert rows(pg_store) == before


def test_a_malformed_number_is_400_naming_the_field_and_masking_the_number(pg_store, client):
    body = problem(client.post("/v1/bindings", json={"mode": "axb", "a": A, "b": "+861380"}),
                   400, "invalid_input", "b")
    assert "+861380" not in body["detail"]
    assert rows(pg_store) == (0, 0, 0)


@pytest.mark.parametrize("payload, field", [
    ({"mode": "axb", "a": 8613800000001, "b": B}, "a"),
    ({"mode": "axz", "a": A}, "mode"),
    ({"mode": "axb", "a": A, "b": B, "record": "yes"}, "record"),
    ({"mode": "axb", "a": A, "b": B, "colour": "red"}, "colour"),
    ({"a": A}, "mode"),
    ({"mode": "axb", "a": A, "b": B, "max_call_s": 10**12}, "max_call_s"),
    ({"mode": "axb", "a": A, "b": B, "out_id": "a\x00b"}, "out_id"),
])
def test_a_body_of_wrong_shape_is_400_with_the_field(client, payload, field):
    problem(client.post("/v1/bindings", json=payload), 400, "invalid_input", field)


def test_invalid_json_is_400(client):
    response = client.post("/v1/bindings", content=b'{"mode": "axb",',
                           headers={"Content-Type": "application/json"})
    problem(response, 400, "invalid_json")


def test_a_semantic_error_is_422(client, pg_store):
    problem(client.post("/v1/bindings", json={"mode": "axb", "a": A, "b": X2, "x": X1}),
            422, "loop", "b")
    assert rows(pg_store) == (0, 0, 0)


def test_a_past_expiry_is_400_on_expires_at(client):
    problem(axb(client, x=X1, expires_at="2020-01-01T00:00:00Z"), 400, "invalid_input",
            "expires_at")


# -- idempotency ------------------------------------------------------------------------------


def test_a_retry_with_the_same_idempotency_key_gets_the_first_answer(pg_store, client):
    headers = {"Idempotency-Key": "req-1"}
    first = client.post("/v1/bindings", json={"mode": "axb", "a": A, "b": B}, headers=headers)
    again = client.post("/v1/bindings", json={"mode": "axb", "a": A, "b": B}, headers=headers)

    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert rows(pg_store) == (1, 2, 1)


def test_the_same_idempotency_key_with_another_body_is_409(pg_store, client):
    headers = {"Idempotency-Key": "req-1"}
    assert axb(client, headers=headers).status_code == 201
    problem(client.post("/v1/bindings", json={"mode": "axb", "a": A, "b": C}, headers=headers),
            409, "idempotency_conflict")
    assert rows(pg_store) == (1, 2, 1)


def test_a_failed_bind_stores_no_idempotency_key(pg_store, client):
    headers = {"Idempotency-Key": "req-2"}
    problem(client.post("/v1/bindings", json={"mode": "axb", "a": A, "b": "nope"},
                        headers=headers), 400, "invalid_input", "b")
    assert rows(pg_store) == (0, 0, 0)


def test_concurrent_requests_with_one_idempotency_key_bind_once(api, acme, pg_store):
    answers = []

    def post():
        with api.client(acme.key) as c:
            answers.append(c.post("/v1/bindings", json={"mode": "axb", "a": A, "b": B},
                                  headers={"Idempotency-Key": "race"}))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert [r.status_code for r in answers] == [201] * 4, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert rows(pg_store) == (1, 2, 1)


def test_a_retry_with_the_same_out_id_and_body_is_200_with_the_first_binding(pg_store, client):
    first = axb(client, out_id="order-7")
    again = axb(client, out_id="order-7")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert rows(pg_store)[0] == 1


def test_the_same_out_id_with_another_body_is_409_out_id_conflict(pg_store, client):
    assert axb(client, out_id="order-7").status_code == 201
    problem(client.post("/v1/bindings", json={"mode": "axb", "a": A, "b": C,
                                              "out_id": "order-7"}),
            409, "out_id_conflict", "out_id")
    assert rows(pg_store)[0] == 1


# -- query, update, unbind ----------------------------------------------------------------------


def test_bindings_are_found_by_x_party_and_out_id_and_paged(client):
    ids = [axb(client, x=X1, out_id="o1").json()["id"],
           client.post("/v1/bindings", json={"mode": "axb", "a": A, "b": C, "x": X2})
           .json()["id"]]

    assert [b["id"] for b in client.get("/v1/bindings", params={"x": X2}).json()["items"]] \
        == ids[1:]
    assert len(client.get("/v1/bindings", params={"party": A}).json()["items"]) == 2
    assert [b["id"] for b in client.get("/v1/bindings",
                                        params={"out_id": "o1"}).json()["items"]] == ids[:1]

    page = client.get("/v1/bindings", params={"limit": 1}).json()
    assert [b["id"] for b in page["items"]] == ids[:1] and page["next_cursor"]
    rest = client.get("/v1/bindings", params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert [b["id"] for b in rest["items"]] == ids[1:] and rest["next_cursor"] is None


def test_patch_changes_expiry_and_party(client):
    created = axb(client, x=X1).json()
    response = client.patch(f"/v1/bindings/{created['id']}",
                            json={"b": C, "expires_at": "1d"})
    assert response.status_code == 200, response.text
    assert response.json()["b"] == C and response.json()["expires_at"] is not None

    cleared = client.patch(f"/v1/bindings/{created['id']}", json={"expires_at": None})
    assert cleared.json()["expires_at"] is None


def test_delete_unbinds_and_a_second_delete_is_422(client):
    created = axb(client, x=X1).json()
    ended = client.delete(f"/v1/bindings/{created['id']}")
    assert ended.status_code == 200 and ended.json()["active"] is False
    problem(client.delete(f"/v1/bindings/{created['id']}"), 422, "already_ended")


def test_an_unknown_binding_is_404(client):
    problem(client.get("/v1/bindings/b0000nothing"), 404, "not_found", "id")


# -- groups and AXG -----------------------------------------------------------------------------


def test_a_group_with_a_malformed_member_is_not_created_at_all(client):
    problem(client.post("/v1/groups", json={"name": "vip", "members": [B, "+861380"]}),
            400, "invalid_input", "member")
    assert client.get("/v1/groups").json() == []


def test_groups_members_and_an_axg_binding(client):
    created = client.post("/v1/groups", json={"name": "vip", "members": [B]})
    assert created.status_code == 201, created.text
    added = client.post("/v1/groups/vip/members", json={"members": [C, B]}).json()
    assert added["changed"] == [C] and added["group"]["members"] == [B, C]

    removed = client.delete("/v1/groups/vip/members/%2B8613800000002").json()
    assert removed["changed"] == [B] and removed["group"]["members"] == [C]
    assert [g["name"] for g in client.get("/v1/groups").json()] == ["vip"]

    bound = client.post("/v1/bindings", json={"mode": "axg", "a": A, "group": "vip"})
    assert bound.status_code == 201, bound.text
    assert bound.json()["group"] == "vip"
    problem(client.post("/v1/groups", json={"name": "vip"}), 409, "group_exists")
    problem(client.get("/v1/groups/nope"), 404, "not_found", "group")


# -- isolation and rate limit -------------------------------------------------------------------


def test_a_customer_cannot_read_list_change_or_unbind_another_customers_binding(
        api, pg_store, client):
    mine = axb(client, x=X1).json()
    client.post("/v1/groups", json={"name": "vip", "members": [C]})
    rival = make_tenant(pg_store, "rival", [X3])

    with api.client(rival.key) as other:
        problem(other.get(f"/v1/bindings/{mine['id']}"), 404, "not_found")
        problem(other.delete(f"/v1/bindings/{mine['id']}"), 404, "not_found")
        problem(other.patch(f"/v1/bindings/{mine['id']}", json={"expires_at": "1h"}),
                404, "not_found")
        assert other.get("/v1/bindings").json()["items"] == []
        assert other.get("/v1/bindings", params={"x": X1}).json()["items"] == []
        problem(other.post("/v1/bindings", json={"mode": "axb", "a": A, "b": C, "x": X1}),
                404, "not_found", "x")
        assert [n["x"] for n in other.get("/v1/numbers").json()["items"]] == [X3]
        assert other.get("/v1/groups").json() == []
        problem(other.get("/v1/groups/vip"), 404, "not_found", "group")
        problem(other.post("/v1/groups/vip/members", json={"members": [B]}), 404, "not_found")

    assert client.get(f"/v1/bindings/{mine['id']}").json()["active"] is True


def test_a_customer_over_its_rate_limit_gets_429_with_retry_after(pg_store, settings, acme):
    settings.api.rate_limit_per_s = 0.01
    settings.api.rate_limit_burst = 3
    with LiveServer(create_app(pg_store, settings)) as server, server.client(acme.key) as c:
        answers = [c.get("/v1/numbers") for _ in range(4)]
        other = make_tenant(pg_store, "other")
        with server.client(other.key) as o:
            assert o.get("/v1/numbers").status_code == 200

    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    problem(answers[-1], 429, "rate_limited")
    assert int(answers[-1].headers["Retry-After"]) >= 1


def test_a_body_over_the_limit_is_413_and_binds_nothing(pg_store, client):
    huge = b'{"mode": "axb", "a": "' + b"1" * (1024 * 1024 + 10) + b'"}'
    problem(client.post("/v1/bindings", content=huge,
                        headers={"Content-Type": "application/json"}), 413, "too_large")

    def chunks():
        yield b'{"mode": "axb", "a": "'
        for _ in range(20):
            yield b"1" * 65536
        yield b'"}'

    problem(client.post("/v1/bindings", content=chunks(),
                        headers={"Content-Type": "application/json"}), 413, "too_large")
    assert rows(pg_store) == (0, 0, 0)
