"""The thin ARI client: requests as ARI wants them, failures mapped once to typed errors."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from pbx_control.asterisk.client import (
    AriClient,
    AriConflict,
    AriNotFound,
    AriRequestError,
    AriTimeout,
    AriUnavailable,
)
from pbx_control.asterisk.service import Backoff


def client_answering(handler) -> AriClient:
    return AriClient("http://ari.test:8088", "pbx", "secret", "pbx-control",
                     transport=httpx.MockTransport(handler))


def run(coro):
    return asyncio.run(coro)


def test_hangup_sends_the_reason_code_and_basic_auth():
    seen = []

    def handler(request: httpx.Request):
        seen.append(request)
        return httpx.Response(204)

    async def call():
        async with client_answering(handler) as client:
            await client.hangup("1796360523.124", reason_code=21)

    run(call())
    request = seen[0]
    assert request.method == "DELETE"
    assert request.url.path == "/ari/channels/1796360523.124"
    assert dict(request.url.params) == {"reason_code": "21"}
    assert request.headers["authorization"].startswith("Basic ")


def test_create_channel_puts_the_identity_in_the_body_not_in_parameters():
    seen = []

    def handler(request: httpx.Request):
        seen.append(request)
        return httpx.Response(200, json={"id": "bleg-1", "state": "Down"})

    async def call():
        async with client_answering(handler) as client:
            return await client.create_channel("PJSIP/8613800000000@carrier", "bleg-1",
                                               "bleg,1.1", "1.1", {"CALLERID(num)": "X"})

    assert run(call()) == {"id": "bleg-1", "state": "Down"}
    assert dict(seen[0].url.params) == {"endpoint": "PJSIP/8613800000000@carrier",
                                        "app": "pbx-control", "appArgs": "bleg,1.1",
                                        "channelId": "bleg-1", "originator": "1.1"}
    assert json.loads(seen[0].content) == {"variables": {"CALLERID(num)": "X"}}


@pytest.mark.parametrize("status, error", [
    (404, AriNotFound), (409, AriConflict), (422, AriConflict), (400, AriRequestError),
    (401, AriRequestError), (500, AriUnavailable), (503, AriUnavailable),
])
def test_http_errors_map_to_one_typed_hierarchy(status, error):
    def handler(request):
        return httpx.Response(status, json={"message": "Channel not found"})

    async def call():
        async with client_answering(handler) as client:
            await client.answer("gone")

    with pytest.raises(error) as caught:
        run(call())
    assert caught.value.status == status and caught.value.message == "Channel not found"


def test_no_answer_in_time_is_a_timeout_and_a_refused_connection_unavailable():
    def slow(request):
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request):
        raise httpx.ConnectError("refused", request=request)

    async def call(handler):
        async with client_answering(handler) as client:
            await client.ring("1.1")

    with pytest.raises(AriTimeout):
        run(call(slow))
    with pytest.raises(AriUnavailable) as caught:
        run(call(refused))
    assert not isinstance(caught.value, AriTimeout)


def test_event_socket_url_names_the_application_and_no_other_subscription():
    client = AriClient("https://pbx.example:8089/", "u", "p", "pbx-control")
    assert client.events_url() == (
        "wss://pbx.example:8089/ari/events?app=pbx-control&subscribeAll=false")
    run(client.close())


def test_unreachable_event_socket_is_unavailable():
    async def call():
        async with AriClient("http://127.0.0.1:9", "u", "p", "app") as client:
            async with client.events(open_timeout_s=1):
                pass

    with pytest.raises(AriUnavailable):
        run(call())


def test_backoff_grows_to_its_bound_with_jitter_and_resets():
    backoff = Backoff(first_s=0.5, max_s=4.0)
    delays = [backoff.next() for _ in range(8)]
    assert all(0.25 <= d <= 4.0 for d in delays)
    assert max(delays[5:]) > 1.0  # grown
    backoff.reset()
    assert backoff.next() <= 0.5
