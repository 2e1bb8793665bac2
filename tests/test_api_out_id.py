"""Retries by out_id over real HTTP on PostgreSQL: concurrent identical binds bind once, the
first answer is 201 and every other 200 with the same binding."""

from __future__ import annotations

import threading

import pytest
from api_support import LiveServer, make_tenant
from sqlalchemy import func, select

from pbx_control.api.app import create_app
from pbx_control.storage.tables import Binding

A, B = "+8613800000001", "+8613800000002"
X1, X2 = "+8613900000001", "+8613900000002"


@pytest.fixture
def api(pg_store, settings):
    settings.api.rate_limit_per_s = 1000
    settings.api.rate_limit_burst = 1000
    with LiveServer(create_app(pg_store, settings)) as server:
        yield server


@pytest.fixture
def acme(pg_store):
    return make_tenant(pg_store, "acme", [X1, X2], city="beijing")


def post_at_once(api, key: str, body: dict, count: int) -> list:
    answers, start = [], threading.Barrier(count)

    def post():
        with api.client(key) as client:
            start.wait(10)
            answers.append(client.post("/v1/bindings", json=body))

    threads = [threading.Thread(target=post) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


@pytest.mark.parametrize("where", [{"x": X1}, {"city": "beijing"}], ids=["on-x", "allocated"])
def test_concurrent_identical_binds_with_one_out_id_answer_one_201_and_the_rest_200(
        api, acme, pg_store, where):
    body = {"mode": "axb", "a": A, "b": B, "out_id": "trip-race", **where}

    answers = post_at_once(api, acme.key, body, 8)

    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 7 + [201], [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    with pg_store.session() as s:
        assert s.scalar(select(func.count()).select_from(Binding)) == 1
