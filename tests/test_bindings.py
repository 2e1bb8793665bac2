"""Bindings: bind, unbind, update, query and sweep, on SQLite and PostgreSQL.

Every refusal is checked twice: the error (class, code, field, masked message) and the
database afterwards (no binding, pair or counter left half-written).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from pbx_control import bindings, pool
from pbx_control.bindings import UNSET, BindRequest
from pbx_control.config import Settings
from pbx_control.customers import (
    create_customer,
    customer_by_name,
    ensure_customer,
    list_customers,
    set_customer_status,
)
from pbx_control.errors import Conflict, InvalidInput, NotFound, PoolExhausted, Unprocessable
from pbx_control.groups import (
    add_members,
    create_group,
    delete_group,
    get_group,
    group_members,
    list_groups,
    remove_members,
)
from pbx_control.routing import BindingView, Direction, Mode
from pbx_control.softphones import (
    add_softphone,
    list_softphones,
    remove_softphone,
    subscriber_for,
)
from pbx_control.storage.tables import Binding, BindingParty, Number

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
A, B, C, D = "+8613800000001", "+8613800000002", "+8613800000003", "+8613800000004"
X1, X2 = "+8613900000001", "+8613900000002"


@pytest.fixture
def cid(store):
    with store.session() as s:
        customer = ensure_customer(s, "acme", NOW)
        pool.add_numbers(s, customer.id, [X1, X2], now=NOW)
        return customer.id


def bind(store, cid, mode=Mode.AXB, a=A, b=B, now=NOW, settings=None, **kw):
    with store.session() as s:
        return bindings.bind(s, cid, BindRequest(mode, a, b, **kw), now=now,
                             settings=settings or Settings())


def snapshot(store) -> tuple:
    """Everything a failed call must leave unchanged."""
    with store.session() as s:
        return (
            s.scalar(select(func.count()).select_from(Binding)),
            s.scalar(select(func.count()).select_from(BindingParty)),
            tuple(s.execute(select(Number.e164, Number.state, Number.active_bindings,
                                   Number.total_bindings).order_by(Number.e164)).all()),
        )


def refused(store, exc_type, call, *args, **kwargs):
    before = snapshot(store)
    with pytest.raises(exc_type) as err:
        call(*args, **kwargs)
    assert snapshot(store) == before, "a refused call changed the database"
    return err.value


def active_pairs(store) -> list[tuple[str, str, str]]:
    with store.session() as s:
        return sorted(s.execute(select(BindingParty.x, BindingParty.party, BindingParty.role)
                                .where(BindingParty.active.is_(True))).all())


def number(store, cid, x):
    with store.session() as s:
        return pool.get_number(s, cid, x)


# --- bind ---------------------------------------------------------------------------------


def test_axb_bind_holds_both_pairs_and_counts_on_x(store, cid):
    binding = bind(store, cid, a="13800000001", b="013800000002", record=True,
                   direction=Direction.A_ONLY, max_call_s=600)

    assert (binding.a, binding.b, binding.x) == (A, B, X1)
    assert active_pairs(store) == [(X1, A, "a"), (X1, B, "b")]
    assert (number(store, cid, X1).active_bindings, number(store, cid, X1).total_bindings) == (
        1, 1)
    data = bindings.binding_dict(binding)
    assert data["mode"] == "axb" and data["record"] and data["direction"] == "a_only"
    assert data["max_call_s"] == 600 and data["active"] and data["created_at"] == NOW


def test_one_x_serves_many_pairs_but_never_one_person_twice(store, cid):
    bind(store, cid, x=X1)
    bind(store, cid, a=C, b=D, x=X1)
    assert number(store, cid, X1).active_bindings == 2

    err = refused(store, Conflict, bind, store, cid, a=C, b="+8613800000009", x=X1)
    assert err.code == "pair_in_use"
    assert "13800000003" not in err.message


def test_the_same_two_people_may_hold_two_numbers(store, cid):
    first, second = bind(store, cid), bind(store, cid)
    assert {first.x, second.x} == {X1, X2}


def test_dedicated_bind_takes_the_whole_number(store, cid):
    binding = bind(store, cid, mode=Mode.AX, b=None, x=X1, primary=True)
    assert number(store, cid, X1).state == "dedicated"
    assert active_pairs(store) == [(X1, A, "a")]
    assert binding.is_primary

    err = refused(store, Conflict, bind, store, cid, a=C, b=D, x=X1)
    assert err.code == "number_in_use"
    err = refused(store, Conflict, bind, store, cid, mode=Mode.AXN, a=C, b=None, x=X1)
    assert err.code == "number_in_use"


def test_dedicated_bind_refuses_a_shared_number(store, cid):
    bind(store, cid, x=X1)
    err = refused(store, Conflict, bind, store, cid, mode=Mode.AX, a=C, b=None, x=X1)
    assert err.code == "number_in_use"


def test_share_limit_refuses_one_more_pair(store, cid):
    settings = Settings()
    settings.routing.max_axb_per_number = 1
    bind(store, cid, x=X1, settings=settings)
    err = refused(store, Conflict, bind, store, cid, a=C, b=D, x=X1, settings=settings)
    assert err.code == "number_full"


def test_axn_and_axg_keep_default_party_and_group(store, cid):
    with store.session() as s:
        group = create_group(s, cid, "vip", NOW)
        add_members(s, cid, "vip", ["13800000007"], NOW)
    axn = bind(store, cid, mode=Mode.AXN, b=None, default_party=C, allow_withheld=True)
    axg = bind(store, cid, mode=Mode.AXG, a=D, b=None, group="vip", default_party=C)

    assert axn.default_party == C and axn.allow_withheld
    assert axg.group_id == group.id
    view = bindings.binding_view(axg, frozenset({"+8613800000007"}), carrier="cm")
    assert isinstance(view, BindingView)
    assert (view.mode, view.group, view.carrier) == (Mode.AXG, {"+8613800000007"}, "cm")


def test_ax_rings_the_subscribers_softphone(store, cid):
    with store.session() as s:
        add_softphone(s, cid, "alice", A, NOW)
        add_softphone(s, cid, "bob", B, NOW)
    binding = bind(store, cid, mode=Mode.AX, b=None, softphone="alice")
    assert binding.softphone == "alice"

    err = refused(store, Unprocessable, bind, store, cid, mode=Mode.AX, b=None,
                  softphone="bob")
    assert err.code == "softphone_mismatch"
    refused(store, NotFound, bind, store, cid, mode=Mode.AX, b=None, softphone="carol")


def test_a_new_primary_ax_binding_takes_the_flag_from_the_others(store, cid):
    first = bind(store, cid, mode=Mode.AX, b=None, x=X1, primary=True)
    second = bind(store, cid, mode=Mode.AX, b=None, x=X2, primary=True)
    with store.session() as s:
        flags = {b.id: b.is_primary for b in bindings.find_bindings(s, cid, party=A)}
    assert flags == {first.id: False, second.id: True}


@pytest.mark.parametrize("kwargs, field", [
    ({"a": "12"}, "a"),
    ({"b": "not a number"}, "b"),
    ({"x": "+86139"}, "x"),
    ({"b": A}, "b"),
    ({"b": None}, "b"),
    ({"allow_withheld": True}, "allow_withheld"),
    ({"default_party": C}, "default_party"),
    ({"softphone": "alice"}, "softphone"),
    ({"primary": True}, "primary"),
    ({"max_call_s": 0}, "max_call_s"),
    ({"out_id": "has space"}, "out_id"),
    ({"direction": "sideways"}, "direction"),
    ({"expires_at": NOW - timedelta(seconds=1)}, "expires"),
    ({"expires_at": datetime(2030, 1, 1)}, "expires"),
])
def test_malformed_axb_requests_are_refused_naming_the_field(store, cid, kwargs, field):
    err = refused(store, InvalidInput, bind, store, cid, **kwargs)
    assert err.field == field


@pytest.mark.parametrize("mode, kwargs, field", [
    (Mode.AX, {"b": B}, "b"),
    (Mode.AX, {"default_party": C}, "default_party"),
    (Mode.AXG, {}, "group"),
    (Mode.AXG, {"group": "vip", "allow_withheld": True}, "allow_withheld"),
    (Mode.AXN, {"group": "vip"}, "group"),
    (Mode.AXN, {"default_party": A}, "default_party"),
])
def test_flags_that_do_not_fit_the_mode_are_refused(store, cid, mode, kwargs, field):
    kwargs.setdefault("b", None)
    err = refused(store, InvalidInput, bind, store, cid, mode=mode, **kwargs)
    assert err.field == field


def test_unknown_group_is_not_found(store, cid):
    err = refused(store, NotFound, bind, store, cid, mode=Mode.AXG, b=None, group="nope")
    assert err.field == "group"


def test_a_pool_number_as_party_would_loop(store, cid):
    err = refused(store, Unprocessable, bind, store, cid, b=X2)
    assert (err.code, err.field) == ("loop", "b")
    assert X2 not in err.message


def test_explicit_x_must_be_the_customers_usable_number(store, cid):
    with store.session() as s:
        other = ensure_customer(s, "other", NOW)
        pool.add_numbers(s, other.id, ["13900000009"], now=NOW)
        pool.add_numbers(s, cid, ["13900000005"], voice=False, now=NOW)
        pool.retire_number(s, cid, X2, now=NOW)
    refused(store, NotFound, bind, store, cid, x="13900000009")
    assert refused(store, Conflict, bind, store, cid, x=X2).code == "number_unavailable"
    assert refused(store, Unprocessable, bind, store, cid, x="13900000005").code == "no_voice"


def test_exhausted_pool_is_a_clear_error(store, cid):
    bind(store, cid, mode=Mode.AX, b=None)
    bind(store, cid, mode=Mode.AX, a=B, b=None)
    err = refused(store, PoolExhausted, bind, store, cid, a=C, b=D)
    assert "pool exhausted" in err.message


def test_disabled_customer_cannot_bind(store, cid):
    with store.session() as s:
        set_customer_status(s, "acme", "disabled")
    assert refused(store, Unprocessable, bind, store, cid).code == "customer_disabled"


# --- out_id -----------------------------------------------------------------------------


def test_repeating_an_out_id_with_the_same_request_returns_the_binding(store, cid):
    first = bind(store, cid, out_id="order-1", expires_at=NOW + timedelta(hours=2))
    again = bind(store, cid, out_id="order-1", expires_at=NOW + timedelta(hours=3))
    assert again.id == first.id
    assert number(store, cid, first.x).active_bindings == 1


def test_an_out_id_with_a_different_request_is_a_conflict(store, cid):
    bind(store, cid, out_id="order-1")
    err = refused(store, Conflict, bind, store, cid, b=C, out_id="order-1")
    assert err.code == "out_id_conflict"
    assert refused(store, Conflict, bind, store, cid, out_id="order-1",
                   record=True).code == "out_id_conflict"


def test_bind_or_retry_says_whether_the_binding_is_new(store, cid):
    with store.session() as s:
        first, created = bindings.bind_or_retry(s, cid, BindRequest(Mode.AXB, A, B, out_id="o"),
                                                now=NOW, settings=Settings())
    with store.session() as s:
        again, created_again = bindings.bind_or_retry(
            s, cid, BindRequest(Mode.AXB, A, B, out_id="o"), now=NOW, settings=Settings())
    assert (created, created_again) == (True, False)
    assert again.id == first.id


def test_concurrent_repeats_of_one_out_id_all_get_the_one_binding(pg_store):
    with pg_store.session() as s:
        customer = ensure_customer(s, "acme", NOW)
        pool.add_numbers(s, customer.id, [X1, X2, "+8613900000003"], now=NOW)
    barrier = threading.Barrier(10)

    def attempt(_):
        barrier.wait(timeout=30)
        with pg_store.session() as s:
            binding, created = bindings.bind_or_retry(
                s, customer.id, BindRequest(Mode.AXN, A, None, default_party=B, out_id="p-0"),
                now=NOW, settings=Settings())
            return binding.id, created

    with ThreadPoolExecutor(10) as workers:
        results = list(workers.map(attempt, range(10)))
    assert len({binding_id for binding_id, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * 9 + [True]


def test_an_out_id_is_free_again_once_its_binding_ended(store, cid):
    first = bind(store, cid, out_id="order-1")
    with store.session() as s:
        bindings.unbind(s, cid, first.id, now=NOW)
    second = bind(store, cid, out_id="order-1")
    assert second.id != first.id


# --- unbind, expiry, sweep ----------------------------------------------------------------


def test_unbind_releases_the_pairs_and_the_counter(store, cid):
    binding = bind(store, cid)
    later = NOW + timedelta(minutes=5)
    with store.session() as s:
        ended = bindings.unbind(s, cid, binding.id, now=later)
        assert ended.end_reason == "unbound"
    assert active_pairs(store) == []
    assert number(store, cid, binding.x).active_bindings == 0
    with store.session() as s:
        released = s.scalars(select(BindingParty.released_at)).all()
    assert {r.replace(tzinfo=UTC) if r.tzinfo is None else r for r in released} == {later}


def test_unbinding_twice_or_an_unknown_id_is_refused(store, cid):
    binding = bind(store, cid)
    with store.session() as s:
        bindings.unbind(s, cid, binding.id, now=NOW)
    with store.session() as s, pytest.raises(Unprocessable) as err:
        bindings.unbind(s, cid, binding.id, now=NOW)
    assert err.value.code == "already_ended"
    with store.session() as s, pytest.raises(NotFound):
        bindings.unbind(s, cid, "b-nope", now=NOW)
    with store.session() as s, pytest.raises(NotFound):
        bindings.unbind(s, cid, "x" * 500, now=NOW)


def test_another_customers_binding_is_not_found(store, cid):
    binding = bind(store, cid)
    with store.session() as s:
        other = ensure_customer(s, "other", NOW).id
    for call in (bindings.get_binding, ):
        with store.session() as s, pytest.raises(NotFound):
            call(s, other, binding.id)
    with store.session() as s, pytest.raises(NotFound):
        bindings.unbind(s, other, binding.id, now=NOW)
    with store.session() as s:
        assert bindings.find_bindings(s, other) == []


def test_a_released_dedicated_number_cools_down_as_a_whole(store, cid):
    binding = bind(store, cid, mode=Mode.AX, b=None, x=X1)
    with store.session() as s:
        bindings.unbind(s, cid, binding.id, now=NOW)
    cooled = number(store, cid, X1)
    assert cooled.state == "cooling"

    day = NOW + timedelta(days=1)
    assert refused(store, Conflict, bind, store, cid, a=C, b=D, x=X1,
                   now=day).code == "number_unavailable"
    month = NOW + timedelta(days=31)
    assert bind(store, cid, a=C, b=D, x=X1, now=month).x == X1


def test_an_allocated_bind_takes_a_cooled_number_back_only_once_its_cooldown_ended(store,
                                                                                  cid):
    # The bind runs the cool-down pass only when its first query says a cool-down has ended.
    first = bind(store, cid, mode=Mode.AX, b=None, x=X1)
    with store.session() as s:
        bindings.unbind(s, cid, first.id, now=NOW)
    bind(store, cid, mode=Mode.AX, a=C, b=None, x=X2)

    day = NOW + timedelta(days=1)
    assert refused(store, PoolExhausted, bind, store, cid, mode=Mode.AX, a=D, b=None,
                   now=day).code == "pool_exhausted"
    month = NOW + timedelta(days=31)
    assert bind(store, cid, mode=Mode.AX, a=D, b=None, now=month).x == X1
    assert (number(store, cid, X1).state, number(store, cid, X1).cooling_until) == (
        "dedicated", None)


def test_sweep_ends_expired_bindings_only(store, cid):
    short = bind(store, cid, expires_at=NOW + timedelta(minutes=1))
    dedicated = bind(store, cid, mode=Mode.AX, a=C, b=None, expires_at=NOW + timedelta(hours=1))
    keep = bind(store, cid, a=D, b="+8613800000009", x=short.x)
    with store.session() as s:
        assert bindings.sweep_expired(s, NOW + timedelta(minutes=2)) == 1
    with store.session() as s:
        assert bindings.get_binding(s, cid, short.id).end_reason == "expired"
        assert bindings.get_binding(s, cid, keep.id).ended_at is None
        assert bindings.sweep_expired(s, NOW + timedelta(hours=2)) == 1
    assert number(store, cid, dedicated.x).state == "cooling"
    assert number(store, cid, short.x).active_bindings == 1


def test_a_bind_closes_an_expired_unswept_pair_in_its_way(store, cid):
    old = bind(store, cid, x=X1, expires_at=NOW + timedelta(minutes=1))
    # Past the pair cool-down, counted from the expiry: the sweeper has not run meanwhile.
    later = NOW + timedelta(minutes=1, seconds=Settings().routing.pair_cooldown_s + 1)
    new = bind(store, cid, b=C, x=X1, now=later)

    with store.session() as s:
        assert bindings.get_binding(s, cid, old.id).end_reason == "expired"
    assert active_pairs(store) == [(X1, A, "a"), (X1, C, "b")]
    assert number(store, cid, X1).active_bindings == 1
    assert new.ended_at is None


@pytest.mark.parametrize("ended", ["unbound", "expired"])
def test_a_party_is_not_bound_on_x_again_within_the_pair_cooldown(store, cid, ended):
    # A talked to B through X1; binding A to C on X1 at once would put A's calls through to
    # C. Allocation never does it; naming X1 must not do it either.
    if ended == "unbound":
        old = bind(store, cid, x=X1)
        with store.session() as s:
            bindings.unbind(s, cid, old.id, now=NOW)
    else:
        bind(store, cid, x=X1, expires_at=NOW + timedelta(minutes=1))
    cooldown = timedelta(seconds=Settings().routing.pair_cooldown_s)
    start = NOW if ended == "unbound" else NOW + timedelta(minutes=1)
    soon = start + timedelta(minutes=30)

    err = refused(store, Conflict, bind, store, cid, b=C, x=X1, now=soon)
    assert err.code == "pair_cooling" and err.field == "x"
    assert f"{start + cooldown:%Y-%m-%d %H:%M}Z" in err.message
    assert A not in err.message and "****" in err.message
    assert bind(store, cid, a=C, b=D, x=X1, now=soon).x == X1  # other parties are free
    after = start + cooldown + timedelta(seconds=1)
    assert bind(store, cid, b="+8613800000009", x=X1, now=after).a == A


def test_a_party_change_respects_the_pair_cooldown(store, cid):
    first = bind(store, cid, x=X1)
    second = bind(store, cid, a=C, b=D, x=X1)
    update(store, cid, first.id, b="+8613800000009")

    err = refused(store, Conflict, update, store, cid, second.id, b=B)
    assert err.code == "pair_cooling"
    later = NOW + timedelta(seconds=Settings().routing.pair_cooldown_s + 1)
    assert update(store, cid, second.id, now=later, b=B).b == B


def test_a_dedicated_x_whose_binding_expired_unswept_answers_its_real_state(store, cid):
    bind(store, cid, mode=Mode.AX, b=None, x=X1, expires_at=NOW + timedelta(minutes=1))
    later = NOW + timedelta(minutes=2)

    err = refused(store, Conflict, bind, store, cid, mode=Mode.AX, a=C, b=None, x=X1,
                  now=later)
    assert err.code == "number_unavailable" and "cools down until" in err.message


def test_a_lost_race_on_the_unique_index_is_a_clean_conflict(store, cid, monkeypatch):
    bind(store, cid, x=X1)
    # Pretend a writer slipped the pair in after the check: only the unique index is left.
    monkeypatch.setattr(bindings, "CHECK_HELD_PAIRS", False)
    err = refused(store, Conflict, bind, store, cid, b=C, x=X1)
    assert err.code == "pair_in_use"


@pytest.mark.parametrize("checked", [True, False], ids=["pair check", "unique index"])
def test_allocation_retries_past_a_number_lost_to_a_race(store, cid, monkeypatch, checked):
    bind(store, cid, x=X1)
    original = pool._candidates

    def stale_first(dedicated, excluding, in_city):
        # The first candidate is one A already holds, as a read racing a commit would see.
        if not excluding:
            return select(Number.id, Number.e164).where(Number.e164 == X1)
        return original(dedicated, excluding, in_city)

    monkeypatch.setattr(pool, "_candidates", stale_first)
    monkeypatch.setattr(bindings, "CHECK_HELD_PAIRS", checked)
    binding = bind(store, cid, b=C)
    assert binding.x == X2
    assert active_pairs(store) == [(X1, A, "a"), (X1, B, "b"), (X2, A, "a"), (X2, C, "b")]
    assert number(store, cid, X1).active_bindings == 1
    assert number(store, cid, X2).active_bindings == 1


# --- update -----------------------------------------------------------------------------


def update(store, cid, binding_id, now=NOW, **kw):
    with store.session() as s:
        return bindings.update_binding(s, cid, binding_id, now=now, settings=Settings(), **kw)


def test_update_moves_a_party_and_keeps_pairs_unique(store, cid):
    first = bind(store, cid, x=X1)
    bind(store, cid, a=C, b=D, x=X1)

    moved = update(store, cid, first.id, b="+8613800000009")
    assert moved.b == "+8613800000009"
    assert (X1, B, "b") not in active_pairs(store)

    err = refused(store, Conflict, update, store, cid, first.id, a=C)
    assert err.code == "pair_in_use"
    err = refused(store, InvalidInput, update, store, cid, first.id, b=A)
    assert err.field == "b"


def test_update_expiry_and_default_party(store, cid):
    axn = bind(store, cid, mode=Mode.AXN, b=None)
    later = NOW + timedelta(days=1)
    changed = update(store, cid, axn.id, expires_at=later, default_party=C)
    assert changed.default_party == C
    assert changed.expires_at.replace(tzinfo=UTC) == later

    east8 = timezone(timedelta(hours=8))
    changed = update(store, cid, axn.id, expires_at=datetime(2026, 6, 3, 8, 0, tzinfo=east8))
    with store.session() as s:
        data = bindings.binding_dict(bindings.get_binding(s, cid, axn.id))
    assert data["expires_at"] == datetime(2026, 6, 3, 0, 0, tzinfo=UTC)
    assert update(store, cid, axn.id, expires_at=None).expires_at is None
    assert refused(store, InvalidInput, update, store, cid, axn.id,
                   expires_at=NOW - timedelta(hours=1)).field == "expires"


def test_update_of_an_ended_or_expired_binding_is_refused(store, cid):
    binding = bind(store, cid, expires_at=NOW + timedelta(minutes=1))
    err = refused(store, Unprocessable, update, store, cid, binding.id,
                  now=NOW + timedelta(minutes=2), b=C)
    assert err.code == "expired"
    with store.session() as s:
        bindings.unbind(s, cid, binding.id, now=NOW)
    err = refused(store, Unprocessable, update, store, cid, binding.id, b=C)
    assert err.code == "already_ended"
    assert UNSET is bindings.UNSET


# --- queries ------------------------------------------------------------------------------


def test_find_by_x_party_and_out_id(store, cid):
    one = bind(store, cid, x=X1, out_id="o1")
    two = bind(store, cid, a=C, b=D, x=X1)
    three = bind(store, cid, a=C, b=B, x=X2)
    with store.session() as s:
        bindings.unbind(s, cid, three.id, now=NOW)

    with store.session() as s:
        def ids(**kw):
            return {b.id for b in bindings.find_bindings(s, cid, **kw)}

        assert ids(x="13900000001") == {one.id, two.id}
        assert ids(party=C) == {two.id}
        assert ids(party=C, active=False) == {two.id, three.id}
        assert ids(out_id="o1") == {one.id}
        page = bindings.find_bindings(s, cid, limit=1)
        assert ids(after=page[0].id) == {one.id, two.id} - {page[0].id}
        with pytest.raises(InvalidInput):
            ids(party="garbage")


# --- expiry text ------------------------------------------------------------------------


@pytest.mark.parametrize("text, delta", [
    ("90s", timedelta(seconds=90)), ("30m", timedelta(minutes=30)),
    ("2h", timedelta(hours=2)), ("7d", timedelta(days=7)),
])
def test_parse_expires_durations(text, delta):
    assert bindings.parse_expires(text, NOW) == NOW + delta


def test_parse_expires_iso_times_with_a_zone():
    assert bindings.parse_expires("2026-06-02T08:00:00+08:00", NOW) == datetime(
        2026, 6, 2, 0, 0, tzinfo=UTC)
    assert bindings.parse_expires("2026-06-02T00:00:00Z", NOW).tzinfo is not None


@pytest.mark.parametrize("text", ["", "2", "0s", "2w", "-1h", "2026-06-02T08:00:00",
                                  "2026-05-01T00:00:00Z", "tomorrow", "99999999999d"])
def test_parse_expires_refuses_naive_past_and_garbage(text):
    with pytest.raises(InvalidInput) as err:
        bindings.parse_expires(text, NOW)
    assert err.value.field == "expires"


# --- what bindings refer to: customers, groups, softphones ---------------------------------


def test_customers_are_created_once_and_can_be_disabled(store):
    with store.session() as s:
        first = create_customer(s, "shop", NOW)
        assert ensure_customer(s, "shop", NOW).id == first.id
        with pytest.raises(Conflict):
            create_customer(s, "shop", NOW)
        with pytest.raises(InvalidInput):
            create_customer(s, "bad name!", NOW)
        with pytest.raises(NotFound):
            customer_by_name(s, "nobody")
        with pytest.raises(InvalidInput):
            set_customer_status(s, "shop", "paused")
        assert set_customer_status(s, "shop", "disabled").status == "disabled"
        assert [c.name for c in list_customers(s)] == ["shop"]


def test_groups_hold_parsed_members_per_customer(store, cid):
    with store.session() as s:
        group = create_group(s, cid, "vip", NOW)
        assert add_members(s, cid, "vip", ["13800000001", "+8613800000001", C], NOW) == [A, C]
        assert add_members(s, cid, "vip", [A], NOW) == []
        assert remove_members(s, cid, "vip", [C, D]) == [C]
        assert group_members(s, group.id) == {A}
        assert [(g.name, m) for g, m in list_groups(s, cid)] == [("vip", {A})]
        other = ensure_customer(s, "other", NOW).id
        with pytest.raises(NotFound):
            get_group(s, other, "vip")
        with pytest.raises(Conflict):
            create_group(s, cid, "vip", NOW)
        with pytest.raises(InvalidInput):
            add_members(s, cid, "vip", ["garbage"], NOW)
        with pytest.raises(InvalidInput):
            add_members(s, cid, "vip", [], NOW)
        delete_group(s, cid, "vip")
        assert list_groups(s, cid) == []


@pytest.mark.parametrize("username", ["", "a b", "x;rm -rf", "user@domain", "é", "u" * 65])
def test_softphone_names_that_could_break_a_dial_string_are_refused(store, cid, username):
    with store.session() as s, pytest.raises(InvalidInput) as err:
        add_softphone(s, cid, username, A, NOW)
    assert err.value.field == "softphone"


def test_softphones_map_users_to_subscribers(store, cid):
    with store.session() as s:
        add_softphone(s, cid, "alice.1", "13800000001", NOW)
        with pytest.raises(Conflict):
            add_softphone(s, cid, "alice.1", B, NOW)
        with pytest.raises(InvalidInput):
            add_softphone(s, cid, "bob", "12", NOW)
        assert subscriber_for(s, "alice.1") == (cid, A)
        assert subscriber_for(s, "nobody") is None
        assert subscriber_for(s, "bad name") is None
        assert [p.username for p in list_softphones(s, cid)] == ["alice.1"]
        remove_softphone(s, cid, "alice.1")
        with pytest.raises(NotFound):
            remove_softphone(s, cid, "alice.1")


def test_expired_unswept_bindings_are_listed_only_without_now(store, cid):
    expired = bind(store, cid, expires_at=NOW + timedelta(hours=1))
    later = NOW + timedelta(hours=2)
    with store.session() as s:
        assert bindings.find_bindings(s, cid, now=later) == []
        kept = bindings.find_bindings(s, cid)
        assert [b.id for b in kept] == [expired.id]
        view = bindings.binding_dict(kept[0], now=later)
        assert (view["active"], view["expired"]) == (False, True)
        assert bindings.binding_dict(kept[0], now=NOW)["active"] is True
