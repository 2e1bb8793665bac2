"""No full number on stderr or in the logs when the core raises while an Asterisk call runs.

The core here raises exceptions that quote the numbers in their message and args, from the
decision, the 503 refusal and every call event; the call must still be refused 503 and the
failures logged by type and place only. asyncio's own reporter (a task's exception never
retrieved, a failing callback) prints messages and reprs too, so it is replaced.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging

from pbx_control.asterisk.scenarios import Harness
from pbx_control.config import Settings
from pbx_control.failures import asyncio_exception_handler

A, X, TARGET = "8613900000077", "8617000000004", "8613600000055"


class LeakyCalls:
    """Every method raises an exception whose message and args hold the numbers it got."""

    def route_inbound(self, caller_raw, dialed_raw, call_uuid, *, trusted=True):
        raise ValueError(f"cannot route {caller_raw} to {dialed_raw}", caller_raw, dialed_raw)

    def route_outbound(self, username, target_raw, call_uuid):
        raise ValueError(f"cannot route {username} to {target_raw}", target_raw)

    def refuse_unavailable(self, caller_raw, dialed_raw, call_uuid):
        raise RuntimeError(f"cannot store the attempt of {caller_raw} on {dialed_raw}")

    def call_event(self, record_id, kind, at=None, **fields):
        raise RuntimeError(f"cannot store {kind} of {A}")

    def open_records(self):
        return []


def assert_no_number(capfd, caplog) -> None:
    out, err = capfd.readouterr()
    for text in (out, err, caplog.text):
        for number in (A, X, TARGET):
            assert number not in text


def test_a_failing_decision_is_refused_503_and_prints_no_number(capfd, caplog):
    async def scenario():
        async with Harness(None, Settings(), calls=LeakyCalls()) as h:
            caller_id = await h.double.incoming_call(A, X)
            await h.double.wait_until(lambda: caller_id in h.double.caller_results)
            await h.controller.app.drain()
            return h.double.caller_results[caller_id]

    with caplog.at_level(logging.DEBUG):
        result = asyncio.run(asyncio.wait_for(scenario(), 30))
        gc.collect()  # an unretrieved task exception is reported when the task is collected

    assert result["status"] == 503
    assert_no_number(capfd, caplog)
    assert "ValueError in route_inbound" in caplog.text


def test_the_loop_reports_unhandled_errors_without_their_message_or_callback(capfd, caplog):
    async def leaky(number):
        raise ValueError(f"bad {number}", number)

    async def scenario():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(asyncio_exception_handler)
        loop.call_soon(functools.partial(int, A + "x"))
        task = loop.create_task(leaky(A))
        await asyncio.sleep(0.01)
        del task
        gc.collect()

    with caplog.at_level(logging.DEBUG):
        asyncio.run(scenario())

    assert_no_number(capfd, caplog)
    assert "unhandled error in a callback: ValueError" in caplog.text
    assert "unhandled error in a task: ValueError in leaky" in caplog.text
