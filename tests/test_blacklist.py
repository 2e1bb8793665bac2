"""The blacklist on both databases: per customer or per X, duplicates, lookups."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pbx_control import blacklist
from pbx_control.customers import ensure_customer
from pbx_control.errors import Conflict, InvalidInput, NotFound
from pbx_control.pool import add_numbers

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
X1, X2 = "+8617000000001", "+8617000000002"
SPAMMER = "+8615000000003"


@pytest.fixture
def customer_id(store):
    with store.session() as session:
        customer = ensure_customer(session, "acme", NOW)
        add_numbers(session, customer.id, [X1, X2], now=NOW)
        return customer.id


def test_whole_customer_entry_blocks_the_caller_on_every_x(store, customer_id):
    with store.session() as session:
        entry = blacklist.add_entry(session, customer_id, "15000000003", reason="spam",
                                    now=NOW)
        assert (entry.number, entry.x) == (SPAMMER, "")
    with store.session() as session:
        assert blacklist.is_blacklisted(session, customer_id, SPAMMER, X1)
        assert blacklist.is_blacklisted(session, customer_id, SPAMMER, X2)
        assert not blacklist.is_blacklisted(session, customer_id, "+8615000000004", X1)


def test_x_entry_blocks_the_caller_on_that_x_only(store, customer_id):
    with store.session() as session:
        blacklist.add_entry(session, customer_id, SPAMMER, x="17000000001", now=NOW)
    with store.session() as session:
        assert blacklist.is_blacklisted(session, customer_id, SPAMMER, X1)
        assert not blacklist.is_blacklisted(session, customer_id, SPAMMER, X2)


def test_withheld_caller_is_never_blacklisted(store, customer_id):
    with store.session() as session:
        assert not blacklist.is_blacklisted(session, customer_id, None, X1)


def test_entries_belong_to_their_customer(store, customer_id):
    with store.session() as session:
        blacklist.add_entry(session, customer_id, SPAMMER, now=NOW)
        other = ensure_customer(session, "other", NOW).id
        assert not blacklist.is_blacklisted(session, other, SPAMMER, X1)
        assert blacklist.list_entries(session, other) == []


def test_the_same_entry_twice_is_a_conflict(store, customer_id):
    with store.session() as session:
        blacklist.add_entry(session, customer_id, SPAMMER, x=X1, now=NOW)
    with store.session() as session, pytest.raises(Conflict) as err:
        blacklist.add_entry(session, customer_id, "+86 150 0000 0003", x=X1, now=NOW)
    assert "0003" in err.value.message and SPAMMER not in err.value.message


def test_whole_customer_and_x_entries_coexist(store, customer_id):
    with store.session() as session:
        blacklist.add_entry(session, customer_id, SPAMMER, now=NOW)
        blacklist.add_entry(session, customer_id, SPAMMER, x=X1, now=NOW)
        assert len(blacklist.list_entries(session, customer_id)) == 2


def test_an_x_outside_the_customers_pool_is_not_found(store, customer_id):
    with store.session() as session, pytest.raises(NotFound) as err:
        blacklist.add_entry(session, customer_id, SPAMMER, x="+8617099999999", now=NOW)
    assert err.value.field == "x"


@pytest.mark.parametrize("number", ["", "abc", "12"])
def test_a_malformed_number_names_the_field(store, customer_id, number):
    with store.session() as session, pytest.raises(InvalidInput) as err:
        blacklist.add_entry(session, customer_id, number, now=NOW)
    assert err.value.field == "number"


def test_remove_takes_the_entry_out_of_routing(store, customer_id):
    with store.session() as session:
        blacklist.add_entry(session, customer_id, SPAMMER, x=X2, now=NOW)
    with store.session() as session:
        blacklist.remove_entry(session, customer_id, "015000000003", x=X2)
    with store.session() as session:
        assert not blacklist.is_blacklisted(session, customer_id, SPAMMER, X2)


def test_removing_an_absent_entry_is_not_found(store, customer_id):
    with store.session() as session:
        blacklist.add_entry(session, customer_id, SPAMMER, x=X1, now=NOW)
    with store.session() as session, pytest.raises(NotFound):
        blacklist.remove_entry(session, customer_id, SPAMMER)  # whole-customer: not there


def test_list_filters_by_scope(store, customer_id):
    with store.session() as session:
        blacklist.add_entry(session, customer_id, SPAMMER, now=NOW)
        blacklist.add_entry(session, customer_id, "+8615000000004", x=X1, now=NOW)
        blacklist.add_entry(session, customer_id, "+8615000000005", x=X2, reason="abuse",
                            now=NOW)

        by_x = blacklist.list_entries(session, customer_id, x=X2)
        whole = blacklist.list_entries(session, customer_id, x="")
        assert [blacklist.entry_dict(e)["number"] for e in by_x] == ["+8615000000005"]
        assert [blacklist.entry_dict(e)["scope"] for e in whole] == ["customer"]
        assert blacklist.entry_dict(by_x[0]) | {"id": 0} == {
            "id": 0, "number": "+8615000000005", "x": X2, "scope": "x", "reason": "abuse",
            "created_at": NOW}
