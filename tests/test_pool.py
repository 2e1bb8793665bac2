"""The number pool: import, listing, retirement and the choice of X, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from pbx_control import bindings, pool
from pbx_control.bindings import BindRequest
from pbx_control.config import Settings
from pbx_control.customers import ensure_customer
from pbx_control.errors import Conflict, InvalidInput, NotFound, PoolExhausted
from pbx_control.routing import Mode
from pbx_control.storage.tables import BindingParty, Number

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
A, B, C = "+8613800000001", "+8613800000002", "+8613800000003"


@pytest.fixture
def cid(store):
    with store.session() as s:
        return ensure_customer(s, "acme", NOW).id


@pytest.fixture
def other(store):
    with store.session() as s:
        return ensure_customer(s, "other", NOW).id


def add(store, cid, *numbers, **kw):
    with store.session() as s:
        return pool.add_numbers(s, cid, numbers, now=NOW, **kw)


def count_numbers(store) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(Number))


def test_add_stores_national_forms_as_e164_and_reports_existing(store, cid):
    result = add(store, cid, "13900000001", "+86 139 0000 0002", "8613900000003")
    assert result.added == ["+8613900000001", "+8613900000002", "+8613900000003"]

    again = add(store, cid, "013900000001", "13900000004")
    assert again.added == ["+8613900000004"]
    assert again.existing == ["+8613900000001"]
    assert count_numbers(store) == 4


def test_add_with_one_malformed_number_writes_nothing_and_masks_it(store, cid):
    with pytest.raises(InvalidInput) as err:
        add(store, cid, "13900000001", "1390000000199999")
    assert err.value.field == "number"
    assert "1390000000199999" not in err.value.message
    assert count_numbers(store) == 0


def test_add_refuses_another_customers_number_and_writes_nothing(store, cid, other):
    add(store, other, "13900000001")
    with pytest.raises(Conflict) as err:
        add(store, cid, "13900000002", "13900000001")
    assert err.value.code == "number_taken"
    assert count_numbers(store) == 1


def test_list_filters_by_state_city_carrier_and_capability(store, cid):
    add(store, cid, "13900000001", "13900000002", city="bj", carrier="cm")
    add(store, cid, "13900000003", city="sh", carrier="cu", voice=False)
    with store.session() as s:
        def xs(**kw):
            return [n.e164 for n in pool.list_numbers(s, cid, **kw)]

        assert xs(city="bj") == ["+8613900000001", "+8613900000002"]
        assert xs(carrier="cu") == ["+8613900000003"]
        assert xs(capability="voice") == ["+8613900000001", "+8613900000002"]
        assert xs(state="retired") == []
        first = pool.list_numbers(s, cid, limit=1)[0]
        assert xs(after_id=first.id) == ["+8613900000002", "+8613900000003"]
        with pytest.raises(InvalidInput):
            xs(capability="fax")


def test_get_number_hides_other_customers_numbers(store, cid, other):
    add(store, other, "13900000001")
    with store.session() as s, pytest.raises(NotFound):
        pool.get_number(s, cid, "13900000001")
    with store.session() as s, pytest.raises(InvalidInput):
        pool.get_number(s, cid, "not-a-number")


def test_counts_group_by_city_and_state(store, cid):
    add(store, cid, "13900000001", "13900000002", city="bj")
    add(store, cid, "13900000003", city="sh")
    with store.session() as s:
        pool.retire_number(s, cid, "13900000003", now=NOW)
        assert pool.number_counts(s, cid) == [
            {"city": "bj", "state": "available", "count": 2},
            {"city": "sh", "state": "retired", "count": 1},
        ]


def test_retire_refuses_a_number_in_use_unless_forced(store, cid):
    add(store, cid, "13900000001")
    with store.session() as s:
        binding = bindings.bind(s, cid, BindRequest(Mode.AXB, A, B), now=NOW,
                                settings=Settings())
    with store.session() as s, pytest.raises(Conflict) as err:
        pool.retire_number(s, cid, "13900000001", now=NOW)
    assert err.value.code == "number_in_use"

    with store.session() as s:
        number = pool.retire_number(s, cid, "13900000001", now=NOW, force=True)
        assert (number.state, number.active_bindings) == ("retired", 0)
        ended = bindings.get_binding(s, cid, binding.id)
        assert ended.end_reason == "retired"
        assert not s.scalar(select(func.count()).where(BindingParty.active.is_(True)))


def allocate(store, cid, parties, mode=Mode.AXB, settings=None, **kw):
    with store.session() as s:
        number = pool.allocate(s, cid, parties, mode=mode, now=kw.pop("now", NOW),
                               settings=settings or Settings(), **kw)
        return number.e164


def bind(store, cid, mode=Mode.AXB, a=A, b=B, now=NOW, settings=None, **kw):
    with store.session() as s:
        return bindings.bind(s, cid, BindRequest(mode, a, b, **kw), now=now,
                             settings=settings or Settings())


def test_allocation_prefers_the_least_used_number(store, cid):
    add(store, cid, "13900000001", "13900000002", "13900000003")
    bind(store, cid, x="13900000001")
    bind(store, cid, x="13900000002")
    assert allocate(store, cid, [C, "+8613800000009"]) == "+8613900000003"

    bindings_ = bind(store, cid, x="13900000003")
    with store.session() as s:
        bindings.unbind(s, cid, bindings_.id, now=NOW)
    # All have one binding or had one: 13900000003 has 0 active but 1 in total, still least.
    assert allocate(store, cid, [C, "+8613800000009"]) == "+8613900000003"


def test_allocation_skips_numbers_a_party_already_holds(store, cid):
    add(store, cid, "13900000001", "13900000002")
    bind(store, cid, x="13900000001")
    assert allocate(store, cid, [A, C]) == "+8613900000002"
    assert allocate(store, cid, [C, B]) == "+8613900000002"


def test_allocation_honours_the_city_strictly_or_falls_back(store, cid):
    add(store, cid, "13900000001", city="bj")
    add(store, cid, "13900000002", city="sh")
    assert allocate(store, cid, [A, B], city="sh") == "+8613900000002"
    with pytest.raises(PoolExhausted) as err:
        allocate(store, cid, [A, B], city="gz")
    assert "gz" in err.value.message
    assert allocate(store, cid, [A, B], city="gz", city_strict=False) in (
        "+8613900000001", "+8613900000002")


def test_allocation_keeps_a_released_pair_out_for_its_cooldown(store, cid):
    add(store, cid, "13900000001", "13900000002")
    first = bind(store, cid, x="13900000001")
    with store.session() as s:
        bindings.unbind(s, cid, first.id, now=NOW)
    later = NOW + timedelta(minutes=10)
    assert allocate(store, cid, [A, C], now=later) == "+8613900000002"

    after = NOW + timedelta(seconds=Settings().routing.pair_cooldown_s + 1)
    bind(store, cid, x="13900000002", a=C, b="+8613800000009", now=after)
    assert allocate(store, cid, [A, B], now=after) == "+8613900000001"


def test_dedicated_modes_need_an_unused_available_number(store, cid):
    add(store, cid, "13900000001", "13900000002")
    bind(store, cid, x="13900000001")
    assert allocate(store, cid, [C], mode=Mode.AX) == "+8613900000002"
    bind(store, cid, mode=Mode.AX, a=C, b=None, x="13900000002")
    with pytest.raises(PoolExhausted):
        allocate(store, cid, ["+8613800000009"], mode=Mode.AXN)


def test_allocation_skips_voiceless_retired_and_full_numbers(store, cid):
    add(store, cid, "13900000001", voice=False)
    add(store, cid, "13900000002", "13900000003")
    settings = Settings()
    settings.routing.max_axb_per_number = 1
    bind(store, cid, x="13900000002", settings=settings)
    with store.session() as s:
        pool.retire_number(s, cid, "13900000003", now=NOW)
    with pytest.raises(PoolExhausted) as err:
        allocate(store, cid, [C, "+8613800000009"], settings=settings)
    assert "pool exhausted" in err.value.message


def test_cooling_numbers_come_back_when_their_cooldown_ends(store, cid):
    add(store, cid, "13900000001")
    binding = bind(store, cid, mode=Mode.AX, b=None)
    with store.session() as s:
        bindings.unbind(s, cid, binding.id, now=NOW)
    with pytest.raises(PoolExhausted):
        allocate(store, cid, [C], mode=Mode.AX, now=NOW + timedelta(days=29))

    later = NOW + timedelta(days=30, seconds=1)
    with store.session() as s:
        assert pool.refresh_cooling(s, later) == 1
        number = pool.get_number(s, cid, "13900000001")
        assert (number.state, number.cooling_until) == ("available", None)


def test_number_dict_is_plain_data(store, cid):
    add(store, cid, "13900000001", city="bj", sms=False)
    with store.session() as s:
        data = pool.number_dict(pool.get_number(s, cid, "13900000001"))
    assert data["x"] == "+8613900000001"
    assert data["capabilities"] == ["voice"]
    assert data["created_at"] == NOW


@pytest.mark.parametrize("kw, field", [
    ({"city": "bei\njing"}, "city"), ({"city": ""}, "city"), ({"carrier": "c\tm"}, "carrier"),
    ({"carrier": ""}, "carrier"), ({"city": "x" * 65}, "city"),
])
def test_city_and_carrier_are_one_printable_line(store, cid, kw, field):
    with pytest.raises(InvalidInput) as err:
        add(store, cid, "+8613900000001", **kw)
    assert err.value.field == field
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Number)) == 0
