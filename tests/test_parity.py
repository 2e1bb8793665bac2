"""One scenario table run against both PBX doubles: the backends must leave the same records.

Each row provisions the same binding, plays the same scenario through the FreeSWITCH
controller (outbound event socket double) and through the Asterisk controller (ARI double),
and compares the call records field by field, ids, timestamps and the PBX's raw cause aside.
In the disconnect row the end time, who hung up and the reconciled mark may differ: the
FreeSWITCH controller's inbound connection sees the end that Asterisk's dropped events hide.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from pbx_control import bindings, customers, pool
from pbx_control.asterisk import scenarios as asterisk_scenarios
from pbx_control.config import Settings
from pbx_control.freeswitch import harness as freeswitch_scenarios
from pbx_control.routing import Mode
from pbx_control.storage import utcnow
from pbx_control.storage.tables import Binding

A, B, X = "+8613900000001", "+8613800000001", "+8617000000001"
STRANGER = "+8613700000009"

COMPARED = ("decision", "reason", "direction", "x", "caller", "callee", "outcome", "hangup_by",
            "sip_status", "binding_id")
DISCONNECT_MAY_DIFFER = {"hangup_by"}

# (row, scenario, caller, binding expired before the call)
ROWS = [
    ("bridge A->B", "answered_caller_hangs_up", A, False),
    ("bridge B->A", "answered_caller_hangs_up", B, False),
    ("callee hangs up", "answered_callee_hangs_up", A, False),
    ("stranger refused", "refused", STRANGER, False),
    ("expired refused", "refused", A, True),
    ("busy", "busy", A, False),
    ("no answer", "no_answer", A, False),
    ("cancel while ringing", "cancel_while_ringing", A, False),
    ("controller disconnect mid-call", "disconnect_mid_call", A, False),
]


def _provision(store, settings, expired: bool) -> str:
    now = utcnow()
    with store.session() as s:
        customer = customers.ensure_customer(s, "default", now)
        pool.add_numbers(s, customer.id, [X], now=now)
        binding = bindings.bind(s, customer.id, bindings.BindRequest(mode=Mode.AXB, a=A, b=B, x=X),
                                now=now, settings=settings)
        if expired:
            s.execute(update(Binding).where(Binding.id == binding.id)
                      .values(expires_at=now - timedelta(seconds=1)))
        return binding.id


def _settings() -> Settings:
    settings = Settings()
    settings.routing.rate_limit_attempts = 1000
    settings.freeswitch.decision_deadline_s = 5.0
    settings.asterisk.decision_deadline_s = 5.0
    return settings


def _played(runner, scenario, store, caller) -> dict:
    settings = _settings()
    record = runner.run_scenario(scenario, store, settings, caller, X)
    assert record is not None, f"{runner.__name__}: no record for {scenario}"
    return record


@pytest.mark.parametrize("row,scenario,caller,expired", ROWS, ids=[r[0] for r in ROWS])
def test_both_backends_leave_the_same_record(pg_store, row, scenario, caller, expired):
    settings = _settings()

    _provision(pg_store, settings, expired)
    fs = _played(freeswitch_scenarios, scenario, pg_store, caller)
    ast = _played(asterisk_scenarios, scenario, pg_store, caller)

    compared = [f for f in COMPARED
                if not (scenario == "disconnect_mid_call" and f in DISCONNECT_MAY_DIFFER)]
    differences = {f: (fs[f], ast[f]) for f in compared if fs[f] != ast[f]}
    assert not differences, f"{row}: FreeSWITCH vs Asterisk differ: {differences}"
    assert fs["ended_at"] is not None and ast["ended_at"] is not None, row
    assert fs["pbx"] == "freeswitch" and ast["pbx"] == "asterisk"


def test_the_table_covers_every_shared_scenario():
    assert {r[1] for r in ROWS} == set(asterisk_scenarios.SCENARIOS)
    assert set(freeswitch_scenarios.SCENARIOS) == set(asterisk_scenarios.SCENARIOS)
