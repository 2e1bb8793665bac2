"""The benchmark's numbering: the seeder and the load generator must agree on every answer."""

from itertools import islice

import pytest

from pbx_control.bench.workload import (
    Workload,
    call_mix,
    party_a,
    party_b,
    stranger,
    x_number,
)
from pbx_control.numbers import parse


def test_every_role_gets_a_parseable_number_of_its_own_prefix():
    for number in (x_number(0), party_a(99), party_b(12345678), stranger(7)):
        assert parse(number) == number
    assert len({x_number(5)[:6], party_a(5)[:6], party_b(5)[:6], stranger(5)[:6]}) == 4


def test_bindings_spread_round_robin_and_counts_add_up():
    workload = Workload(bindings=1003, numbers=10)

    assert sum(workload.per_number(i) for i in range(10)) == 1003
    assert workload.per_number(0) == 101 and workload.per_number(9) == 100
    assert workload.x_of(13) == x_number(3)


def test_bound_calls_expect_the_other_party_on_their_own_x():
    workload = Workload(bindings=50, numbers=5)

    for call in islice(call_mix(workload, seed=3), 400):
        if call.expect_to is None:
            assert call.caller.startswith(stranger(0)[:6])
            continue
        k = int(call.caller[-8:])
        assert call.dialed == workload.x_of(k)
        assert {call.caller, call.expect_to} == {party_a(k), party_b(k)}


def test_the_share_of_bound_calls_follows_the_setting():
    calls = list(islice(call_mix(Workload(1000, 10), bound_share=0.8, seed=1), 5000))
    bound = sum(1 for c in calls if c.expect_to is not None)

    assert 0.77 < bound / len(calls) < 0.83


def test_a_caller_comes_back_to_its_x_only_after_every_binding_had_its_turn():
    workload = Workload(bindings=100, numbers=10)
    bound = [c for c in islice(call_mix(workload, seed=2), 1000) if c.expect_to is not None]

    first_round = [(c.caller, c.dialed) for c in bound[:200]]
    assert len(set(first_round)) == 200
    strangers = [c.caller for c in islice(call_mix(workload, seed=2), 1000) if not c.expect_to]
    assert len(set(strangers)) == len(strangers)


def test_a_workload_without_bindings_cannot_make_bound_calls():
    with pytest.raises(ValueError):
        next(call_mix(Workload(0, 10)))
    with pytest.raises(ValueError):
        Workload(10, 0)
