"""Call records on both databases: the call-event function, listing, export and purge."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from pbx_control import records
from pbx_control.customers import ensure_customer
from pbx_control.errors import InvalidInput, NotFound
from pbx_control.storage.tables import CallEvent, CallRecord

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
X = "+8617000000001"
A = "+8613800000001"


def sec(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


@pytest.fixture
def customer_id(store):
    with store.session() as session:
        return ensure_customer(session, "acme", T0).id


def attempt(session, customer_id, started_at=T0, **overrides):
    fields = dict(customer_id=customer_id, binding_id="b1", out_id="order-1",
                  direction="inbound", x=X, caller=A, callee="+8613900000002",
                  decision="connect", reason="a_to_b", pbx="freeswitch", node="fs1",
                  call_uuid="uuid-1", started_at=started_at)
    fields.update(overrides)
    return records.new_attempt(session, **fields)


def events_of(session, record_id):
    query = select(CallEvent).where(CallEvent.record_id == record_id).order_by(CallEvent.id)
    return list(session.scalars(query))


def test_a_call_life_sets_times_durations_and_queues_each_event(store, customer_id):
    with store.session() as session:
        record_id = attempt(session, customer_id).id
    with store.session() as session:
        records.call_event(session, record_id, "ringing", at=sec(2))
        records.call_event(session, record_id, "answered", at=sec(5))
        records.call_event(session, record_id, "ended", at=sec(65), hangup_by="callee",
                           sip_status=200, q850_cause=16, pbx_cause="NORMAL_CLEARING",
                           recording_path="/rec/one.wav")

    with store.session() as session:
        record = records.get_record(session, customer_id, record_id)
        data = records.record_dict(record)
        events = events_of(session, record_id)
    assert (data["ringing_at"], data["answered_at"], data["ended_at"]) == (sec(2), sec(5),
                                                                          sec(65))
    assert (data["duration_s"], data["billsec_s"], data["outcome"]) == (65, 60, "answered")
    assert (data["hangup_by"], data["q850_cause"], data["recording_path"]) == (
        "callee", 16, "/rec/one.wav")
    assert [e.kind for e in events] == ["ringing", "answered", "ended"]
    assert all(e.customer_id == customer_id and e.next_attempt_at == e.at for e in events)
    assert events[-1].payload["billsec_s"] == 60
    assert events[-1].payload["ended_at"] == sec(65).isoformat()
    assert len({e.event_id for e in events}) == 3


def test_unanswered_end_has_no_billable_seconds(store, customer_id):
    with store.session() as session:
        record = attempt(session, customer_id)
        records.call_event(session, record.id, "ended", at=sec(20), outcome="no_answer")
        assert (record.duration_s, record.billsec_s, record.outcome) == (20, 0, "no_answer")


def test_second_end_and_second_answer_are_ignored(store, customer_id):
    with store.session() as session:
        record_id = attempt(session, customer_id).id
    with store.session() as session:
        assert records.call_event(session, record_id, "answered", at=sec(3)) is not None
        assert records.call_event(session, record_id, "answered", at=sec(4)) is None
        assert records.call_event(session, record_id, "ended", at=sec(10)) is not None
        assert records.call_event(session, record_id, "ended", at=sec(50),
                                  outcome="failed") is None
        assert records.call_event(session, record_id, "refused", at=sec(51)) is None

    with store.session() as session:
        record = session.get(CallRecord, record_id)
        assert (record.duration_s, record.billsec_s, record.outcome) == (10, 7, "answered")
        assert [e.kind for e in events_of(session, record_id)] == ["answered", "ended"]


def test_events_out_of_order_never_move_times_backwards(store, customer_id):
    with store.session() as session:
        record = attempt(session, customer_id)
        # The hangup reached us before the answer (two connections to the PBX).
        records.call_event(session, record.id, "ended", at=sec(40), outcome="answered")
        records.call_event(session, record.id, "answered", at=sec(10))
        assert records.call_event(session, record.id, "ringing", at=sec(2)) is None

        assert as_utc(record.answered_at) == sec(10) and as_utc(record.ended_at) == sec(40)
        assert (record.duration_s, record.billsec_s) == (40, 30)


def test_event_times_are_kept_in_call_order(store, customer_id):
    with store.session() as session:
        record = attempt(session, customer_id)
        records.call_event(session, record.id, "ringing", at=T0 - timedelta(seconds=5))
        records.call_event(session, record.id, "answered", at=sec(8))
        records.call_event(session, record.id, "ended", at=sec(6))

        assert as_utc(record.ringing_at) == T0  # a PBX clock behind ours
        assert as_utc(record.ended_at) == sec(8)
        assert (record.duration_s, record.billsec_s) == (8, 0)


def test_late_answer_after_the_end_stays_inside_the_call(store, customer_id):
    with store.session() as session:
        record = attempt(session, customer_id)
        records.call_event(session, record.id, "ended", at=sec(30))
        records.call_event(session, record.id, "answered", at=sec(90))
        assert as_utc(record.answered_at) == sec(30) and record.billsec_s == 0


def test_refused_event_ends_the_record(store, customer_id):
    with store.session() as session:
        record = attempt(session, customer_id, decision="refuse", reason="no_binding")
        records.call_event(session, record.id, "refused", at=T0, sip_status=403,
                           q850_cause=21, hangup_by="controller")
        assert (record.outcome, record.duration_s, as_utc(record.ended_at)) == (
            "refused", 0, T0)
        assert [e.kind for e in events_of(session, record.id)] == ["refused"]


def test_pbx_cause_arriving_after_a_refusal_is_kept_and_nothing_else(store, customer_id):
    with store.session() as session:
        record = attempt(session, customer_id, decision="refuse", reason="no_binding")
        records.call_event(session, record.id, "refused", at=T0, sip_status=403,
                           q850_cause=21, hangup_by="controller")

        late = records.call_event(session, record.id, "ended", at=sec(5), outcome="failed",
                                  sip_status=500, pbx_cause="CALL_REJECTED/21")

        assert late is None
        assert (record.pbx_cause, record.outcome, record.sip_status) == (
            "CALL_REJECTED/21", "refused", 403)
        assert as_utc(record.ended_at) == T0
        assert [e.kind for e in events_of(session, record.id)] == ["refused"]


def test_record_without_customer_queues_no_event(store):
    with store.session() as session:
        record = attempt(session, None, decision="refuse", reason="unknown_number")
        assert records.call_event(session, record.id, "refused", at=T0) is not None
        assert events_of(session, record.id) == []


def test_call_event_rejects_unknown_kind_field_and_record(store, customer_id):
    with store.session() as session:
        record = attempt(session, customer_id)
        with pytest.raises(InvalidInput):
            records.call_event(session, record.id, "bridged", at=T0)
        with pytest.raises(InvalidInput):
            records.call_event(session, record.id, "ended", at=T0, caller="+861")
        with pytest.raises(NotFound):
            records.call_event(session, "0" * 32, "ended", at=T0)


@pytest.mark.parametrize("fields", [
    {"sip_status": "200"}, {"q850_cause": True}, {"outcome": "great"}, {"hangup_by": "god"},
    {"reconciled": "yes"}, {"recording_path": 7},
])
def test_call_event_rejects_bad_field_values_by_name(store, customer_id, fields):
    with store.session() as session:
        record = attempt(session, customer_id)
        with pytest.raises(InvalidInput) as err:
            records.call_event(session, record.id, "ended", at=T0, **fields)
        assert err.value.field == next(iter(fields))
        assert record.ended_at is None


def test_call_event_can_correct_the_callee_and_mark_reconciled(store, customer_id):
    with store.session() as session:
        record = attempt(session, customer_id)
        records.call_event(session, record.id, "ended", at=sec(1), reconciled=True,
                           callee="alice", pbx_cause="x" * 100)
        assert (record.reconciled, record.callee, len(record.pbx_cause)) == (True, "alice", 64)


def test_get_record_hides_other_customers_records(store, customer_id):
    with store.session() as session:
        other = ensure_customer(session, "other", T0).id
        record_id = attempt(session, other).id
    with store.session() as session, pytest.raises(NotFound):
        records.get_record(session, customer_id, record_id)


def test_open_records_are_this_nodes_unended_ones(store, customer_id):
    with store.session() as session:
        open_here = attempt(session, customer_id).id
        ended = attempt(session, customer_id)
        records.call_event(session, ended.id, "ended", at=sec(1))
        attempt(session, customer_id, node="fs2")
        attempt(session, customer_id, pbx="asterisk")
    with store.session() as session:
        assert [r.id for r in records.open_records(session, "freeswitch", "fs1")] == [open_here]


# -- listing -----------------------------------------------------------------------------

def seed(store, customer_id, n, same_second_every=3):
    """n records; every few share a start time, so pages must break ties on the id."""
    with store.session() as session:
        return [attempt(session, customer_id, started_at=sec(i // same_second_every),
                        binding_id=f"b{i % 2}", out_id=f"o{i % 3}").id for i in range(n)]


def test_pages_cover_every_record_once_newest_first(store, customer_id):
    ids = seed(store, customer_id, 25)
    seen, cursor = [], None
    with store.session() as session:
        for _ in range(10):
            page, cursor = records.list_records(session, customer_id, limit=10, cursor=cursor)
            seen.extend(page)
            if cursor is None:
                break
    assert len(seen) == 25 and {r.id for r in seen} == set(ids)
    keys = [(as_utc(r.started_at), r.id) for r in seen]
    assert keys == sorted(keys, reverse=True)


def test_pages_stay_stable_while_new_calls_are_recorded(store, customer_id):
    seed(store, customer_id, 12)
    with store.session() as session:
        first, cursor = records.list_records(session, customer_id, limit=5)
    with store.session() as session:
        attempt(session, customer_id, started_at=sec(3600))
    with store.session() as session:
        second, _ = records.list_records(session, customer_id, limit=5, cursor=cursor)
    assert not {r.id for r in first} & {r.id for r in second}
    assert max(as_utc(r.started_at) for r in second) <= min(as_utc(r.started_at)
                                                              for r in first)


def test_last_page_has_no_cursor(store, customer_id):
    seed(store, customer_id, 4)
    with store.session() as session:
        page, cursor = records.list_records(session, customer_id, limit=4)
    assert len(page) == 4 and cursor is None


@pytest.mark.parametrize("cursor", ["garbage", "", "bm90IGpzb24", "WyJ4IiwgMV0"])
def test_a_forged_cursor_is_refused(store, customer_id, cursor):
    with store.session() as session, pytest.raises(InvalidInput) as err:
        records.list_records(session, customer_id, cursor=cursor)
    assert err.value.field == "cursor"


@pytest.mark.parametrize("limit", [0, 1001, "10", True])
def test_limit_out_of_range_is_refused(store, customer_id, limit):
    with store.session() as session, pytest.raises(InvalidInput):
        records.list_records(session, customer_id, limit=limit)


def test_filters_narrow_the_listing(store, customer_id):
    seed(store, customer_id, 9)
    with store.session() as session:
        attempt(session, customer_id, x="+8617000000002", started_at=sec(1), binding_id="b9")

        def count(**filters):
            return len(records.list_records(session, customer_id, **filters)[0])

        assert count() == 10
        assert count(since=sec(1), until=sec(2)) == 4  # since inclusive, until exclusive
        assert count(x="17000000002") == 1  # national form, parsed like everywhere
        assert count(binding_id="b1") == 4
        assert count(out_id="o0") == 3
        with pytest.raises(InvalidInput):
            count(since=datetime(2026, 3, 1))  # no zone


def test_listing_is_per_customer(store, customer_id):
    seed(store, customer_id, 3)
    with store.session() as session:
        other = ensure_customer(session, "other", T0).id
        assert records.list_records(session, other) == ([], None)


# -- export ------------------------------------------------------------------------------

def test_export_csv_has_a_header_and_every_record_oldest_first(store, customer_id):
    ids = seed(store, customer_id, 7, same_second_every=1)
    out = io.StringIO()
    with store.session() as session:
        assert records.export_records(session, customer_id, "csv", out) == 7
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["id"] for r in rows] == ids
    assert rows[0]["caller"] == A and rows[0]["started_at"] == T0.isoformat()
    assert list(rows[0]) == list(records.RECORD_FIELDS)


def test_export_jsonl_is_one_object_per_line_with_filters(store, customer_id):
    seed(store, customer_id, 6)
    out = io.StringIO()
    with store.session() as session:
        n = records.export_records(session, customer_id, "jsonl", out, binding_id="b0")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert n == len(lines) == 3 and {line["binding_id"] for line in lines} == {"b0"}


def test_export_streams_past_one_batch(store, customer_id, monkeypatch):
    monkeypatch.setattr(records, "_BATCH", 4)
    ids = seed(store, customer_id, 11, same_second_every=5)
    out = io.StringIO()
    with store.session() as session:
        records.export_records(session, customer_id, "jsonl", out)
    assert [json.loads(line)["id"] for line in out.getvalue().splitlines()] == sorted(
        ids, key=lambda i: (ids.index(i) // 5, i))


def test_export_defuses_spreadsheet_formulas_but_keeps_e164(store, customer_id):
    with store.session() as session:
        attempt(session, customer_id, caller="=HYPERLINK(\"http://x\")", callee="+8613900000002")
    out = io.StringIO()
    with store.session() as session:
        records.export_records(session, customer_id, "csv", out)
    row = next(csv.DictReader(io.StringIO(out.getvalue())))
    assert row["caller"].startswith("'=") and row["callee"] == "+8613900000002"


def test_export_refuses_an_unknown_format(store, customer_id):
    with store.session() as session, pytest.raises(InvalidInput):
        records.export_records(session, customer_id, "xml", io.StringIO())


# -- purge -------------------------------------------------------------------------------

def test_purge_deletes_old_records_their_files_and_events(store, customer_id, tmp_path):
    old_file, new_file = tmp_path / "old.wav", tmp_path / "new.wav"
    old_file.write_bytes(b"RIFF")
    new_file.write_bytes(b"RIFF")
    with store.session() as session:
        old = attempt(session, customer_id, started_at=T0 - timedelta(days=200))
        records.call_event(session, old.id, "ended", at=old.started_at,
                           recording_path=str(old_file))
        gone = attempt(session, customer_id, started_at=T0 - timedelta(days=190))
        records.call_event(session, gone.id, "ended", at=gone.started_at,
                           recording_path=str(tmp_path / "already-gone.wav"))
        new = attempt(session, customer_id, started_at=T0)
        records.call_event(session, new.id, "ended", at=T0, recording_path=str(new_file))

    with store.session() as session:
        result = records.purge_records(session, older_than=T0 - timedelta(days=180))
    assert tuple(result) == (2, 1) and result.kept == ()
    assert not old_file.exists() and new_file.exists()
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(CallRecord)) == 1
        assert events_of(session, old.id) == [] and len(events_of(session, new.id)) == 1


def test_purge_keeps_a_record_whose_file_cannot_be_deleted(store, customer_id, tmp_path):
    stuck = tmp_path / "a-directory.wav"
    stuck.mkdir()
    with store.session() as session:
        kept = attempt(session, customer_id, started_at=T0 - timedelta(days=400))
        records.call_event(session, kept.id, "ended", at=kept.started_at,
                           recording_path=str(stuck))
        relative = attempt(session, customer_id, started_at=T0 - timedelta(days=400))
        records.call_event(session, relative.id, "ended", at=relative.started_at,
                           recording_path="recording-1.wav")
        attempt(session, customer_id, started_at=T0 - timedelta(days=400))

    with store.session() as session:
        records_n, files_n = result = records.purge_records(session, older_than=T0)
    assert (records_n, files_n) == (1, 0)
    assert set(result.kept) == {kept.id, relative.id}
    with store.session() as session:
        assert session.get(CallRecord, kept.id).recording_path == str(stuck)


def test_purge_can_be_limited_to_one_customer(store, customer_id):
    with store.session() as session:
        other = ensure_customer(session, "other", T0).id
        attempt(session, customer_id, started_at=T0 - timedelta(days=1))
        attempt(session, other, started_at=T0 - timedelta(days=1))
    with store.session() as session:
        assert tuple(records.purge_records(session, older_than=T0, customer_id=other)) == (1, 0)
        assert len(records.list_records(session, customer_id)[0]) == 1


def test_purge_works_through_many_batches(store, customer_id, monkeypatch):
    monkeypatch.setattr(records, "_BATCH", 3)
    seed(store, customer_id, 10)
    with store.session() as session:
        assert tuple(records.purge_records(session, older_than=sec(3600))) == (10, 0)


def as_utc(value):
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


# -- many events in one transaction (what the adapters do) ------------------------------------

def outbox_rows(session):
    query = select(CallEvent).order_by(CallEvent.id)
    return [(e.record_id, e.kind, e.payload) for e in session.scalars(query)]


def without_ids(rows):
    return [(kind, {k: v for k, v in payload.items() if k != "id"})
            for _, kind, payload in rows]


LIFE = [("ringing", sec(2), {}), ("answered", sec(5), {}), ("ringing", sec(6), {}),
        ("ended", sec(65), {"hangup_by": "callee", "sip_status": 200, "q850_cause": 16,
                            "pbx_cause": "NORMAL_CLEARING"}),
        ("ended", sec(70), {"hangup_by": "caller"})]


def test_a_batch_gives_the_same_rows_and_outbox_as_one_event_at_a_time(store, customer_id):
    # One record through the unit of work, event by event in the session that holds it; the
    # other as the adapters write it: every event in one batch, on a plain connection.
    with store.session() as session:
        held = attempt(session, customer_id, call_uuid="held").id
        batched = attempt(session, customer_id, call_uuid="batched").id
    with store.session() as session:
        session.get(CallRecord, held)
        for kind, at, fields in LIFE:
            records.call_event(session, held, kind, at=at, **fields)
    with store.transaction() as connection:
        results = records.call_events(connection, [(batched, kind, at, fields)
                                                   for kind, at, fields in LIFE])

    assert [r is None for r in results] == [False, False, True, False, True]
    assert results[3]["billsec_s"] == 60 and results[3]["hangup_by"] == "callee"
    with store.session() as session:
        rows = {r.call_uuid: records.record_dict(r) for r in session.scalars(
            select(CallRecord))}
        outbox = outbox_rows(session)
    for data in rows.values():
        data.pop("id"), data.pop("call_uuid")
    assert rows["held"] == rows["batched"]
    assert rows["batched"]["outcome"] == "answered"
    held_events = [row for row in outbox if row[0] == held]
    batched_events = [row for row in outbox if row[0] == batched]
    assert [kind for _, kind, _ in batched_events] == ["ringing", "answered", "ended"]
    # Each outbox row shows the record as that event left it, in either path.
    assert without_ids(held_events) == [
        (kind, {**payload, "call_uuid": "held"}) for kind, payload in
        without_ids(batched_events)]
    assert batched_events[0][2]["answered_at"] is None


def test_one_bad_event_in_a_batch_costs_the_others_nothing(store, customer_id):
    with store.session() as session:
        first = attempt(session, customer_id, call_uuid="u1").id
        second = attempt(session, customer_id, call_uuid="u2").id
    with store.session() as session:
        results = records.call_events(session, [
            (first, "ringing", sec(1), {}),
            ("no-such-record", "ringing", sec(1), {}),
            (second, "rung", sec(1), {}),
            (second, "ended", sec(9), {"sip_status": "200"}),
            (second, "answered", sec(2), {}),
        ])

    assert isinstance(results[1], NotFound)
    assert isinstance(results[2], InvalidInput) and results[2].field == "kind"
    assert isinstance(results[3], InvalidInput) and results[3].field == "sip_status"
    assert results[0]["ringing_at"] is not None and results[4]["answered_at"] is not None
    with store.session() as session:
        assert [kind for _, kind, _ in outbox_rows(session)] == ["ringing", "answered"]
        assert session.get(CallRecord, second).ended_at is None


def test_a_record_added_in_the_same_session_is_found(store, customer_id):
    with store.session() as session:
        record = attempt(session, customer_id)
        record_id = record.id
        session.expunge(record)
        pending = attempt(session, customer_id, call_uuid="pending", flush=False)
        results = records.call_events(session, [(record_id, "ringing", sec(1), {}),
                                                (pending.id, "ringing", sec(1), {})])
    assert results[0]["ringing_at"] is not None and results[1] is pending
    with store.session() as session:
        assert session.get(CallRecord, record_id).ringing_at is not None


def test_several_records_in_one_batch_end_as_each_would_alone(store, customer_id):
    # Several changed records and outbox rows: the driver's executemany, not one row alone.
    with store.session() as session:
        alone = attempt(session, customer_id, call_uuid="alone").id
        together = [attempt(session, customer_id, call_uuid=f"t{i}").id for i in range(3)]
    with store.transaction() as connection:
        for kind, at, fields in LIFE:
            records.call_events(connection, [(alone, kind, at, fields)])
    with store.transaction() as connection:
        batch = [(record_id, kind, at, fields) for kind, at, fields in LIFE
                 for record_id in together]
        results = records.call_events(connection, batch)

    assert sum(r is not None for r in results) == 3 * 3
    with store.session() as session:
        rows = {r.call_uuid: records.record_dict(r) for r in session.scalars(
            select(CallRecord))}
        outbox = outbox_rows(session)
    for data in rows.values():
        data.pop("id"), data.pop("call_uuid")
    assert all(rows[f"t{i}"] == rows["alone"] for i in range(3))
    assert rows["alone"]["billsec_s"] == 60 and rows["alone"]["reconciled"] is False
    def life(record_id):
        return [(kind, {k: v for k, v in payload.items() if k != "call_uuid"})
                for kind, payload in without_ids([row for row in outbox if row[0] == record_id])]

    assert [kind for kind, _ in life(alone)] == ["ringing", "answered", "ended"]
    assert all(life(record_id) == life(alone) for record_id in together)
