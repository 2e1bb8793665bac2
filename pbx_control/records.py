"""Call records: one row per attempt, connected or refused, and the one call-event function.

A record is written when the call is decided (``new_attempt``) and completed by the events the
PBX adapters report through ``call_event``. Every accepted event also appends a row to the
``call_events`` outbox in the same transaction, so the webhook pusher never misses one across
a restart. Listing (cursor pages), export (CSV, JSON lines) and retention (``purge_records``,
which deletes the recording files too) follow.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
import logging
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from sqlalchemy import and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from .causes import HangupBy, Outcome
from .errors import InvalidInput, NotFound
from .numbers import parse
from .storage.db import as_utc
from .storage.tables import CallEvent, CallRecord

logger = logging.getLogger(__name__)

KINDS = ("ringing", "answered", "ended", "refused")
FIELDS = frozenset({
    "outcome", "hangup_by", "sip_status", "q850_cause", "pbx_cause", "recording_path",
    "reconciled", "callee",
})
_TEXT_LIMITS = {"outcome": 16, "hangup_by": 16, "pbx_cause": 64, "recording_path": 1024,
                "callee": 64}

RECORD_FIELDS = (
    "id", "customer_id", "binding_id", "out_id", "direction", "x", "caller", "callee",
    "decision", "reason", "pbx", "node", "call_uuid", "started_at", "ringing_at",
    "answered_at", "ended_at", "duration_s", "billsec_s", "outcome", "hangup_by",
    "sip_status", "q850_cause", "pbx_cause", "recording_path", "reconciled",
)
_TIMES = ("started_at", "ringing_at", "answered_at", "ended_at")
_RECORDS = CallRecord.__table__
_EVENTS = CallEvent.__table__
# What an event may change: every record column but those fixed when the call was decided.
_MUTABLE = ("ringing_at", "answered_at", "ended_at", "duration_s", "billsec_s", "outcome",
            "hangup_by", "sip_status", "q850_cause", "pbx_cause", "recording_path",
            "reconciled", "callee", "updated_at")
_RECORD_COLUMNS = tuple(_RECORDS.c.keys())
_INSERT_RECORD = insert(_RECORDS)
_INSERT_EVENT = insert(_EVENTS)
_UPDATE_RECORD = (update(_RECORDS).where(_RECORDS.c.id == bindparam("_id"))
                  .values({name: bindparam(name) for name in _MUTABLE}))


def new_attempt(
    session: Session, *, customer_id: int | None, binding_id: str | None, out_id: str | None,
    direction: str, x: str | None, caller: str | None, callee: str | None, decision: str,
    reason: str, pbx: str, node: str | None, call_uuid: str | None, started_at: datetime,
    flush: bool = True,
) -> CallRecord:
    """Write the record of a call just decided.

    Flushed so that ``call_event`` can find it at once; ``flush=False`` leaves it pending for a
    caller that goes on with ``record_event`` and so writes the row in one INSERT.
    """
    record = CallRecord(**_attempt_columns(
        customer_id=customer_id, binding_id=binding_id, out_id=out_id, direction=direction,
        x=x, caller=caller, callee=callee, decision=decision, reason=reason, pbx=pbx,
        node=node, call_uuid=call_uuid, started_at=started_at))
    session.add(record)
    if flush:
        session.flush()
    return record


def insert_attempt(connection: Connection, refusal: dict | None = None, **columns) -> str:
    """``new_attempt`` on a plain connection, for the per-call path; with ``refusal`` (the
    fields of its 'refused' event) the record is written closed, with its outbox row.
    Returns the record's id."""
    record = _Values(_attempt_columns(**columns))
    outbox = None
    if refusal is not None:
        _check("refused", refusal)
        at = _apply(record, "refused", record.started_at, refusal)
        if record.customer_id is not None:
            outbox = _outbox_row(record, "refused", at)

    connection.execute(_INSERT_RECORD, vars(record))
    if outbox is not None:
        connection.execute(_INSERT_EVENT, outbox)
    return record.id


def _attempt_columns(*, customer_id, binding_id, out_id, direction, x, caller, callee,
                     decision, reason, pbx, node, call_uuid, started_at) -> dict:
    started_at = as_utc(started_at)
    columns = dict.fromkeys(_RECORD_COLUMNS)
    columns.update(
        id=uuid.uuid4().hex, customer_id=customer_id, binding_id=binding_id, out_id=out_id,
        direction=direction, x=x, caller=_clip(caller, 64), callee=_clip(callee, 64),
        decision=decision, reason=reason, pbx=pbx, node=node,
        call_uuid=_clip(call_uuid, 64), started_at=started_at, updated_at=started_at,
        reconciled=False)
    return columns


def call_event(
    db: Session | Connection, record_id: str, kind: str, *, at: datetime, **fields
) -> CallRecord | None:
    """THE call-event function: apply ``kind`` to the record, queue it for webhooks.

    Returns the record, or None when the event changes nothing (a second 'answered', an
    'ended' or 'refused' for a record already ended, 'ringing' after the answer). Raises
    NotFound for an unknown record and InvalidInput for an unknown kind or field.
    """
    (result,) = call_events(db, [(record_id, kind, at, fields)])
    if isinstance(result, Exception):
        raise result
    if isinstance(result, dict):
        return CallRecord(**result)
    return result


def call_events(db: Session | Connection,
                events: Sequence[tuple[str, str, datetime, dict]]) -> list:
    """``call_event`` for many events, in order, in the caller's transaction.

    Each event's result is in its place: the record's columns after it (a dict; the
    CallRecord itself for a record this session holds), None when it changed nothing, or
    the NotFound / InvalidInput it would have raised, so one bad event never costs the
    others theirs. The PBX adapters write their events so, a batch per transaction: the
    rows are locked and read by one statement, updated by one and their outbox rows added by
    one, where one event at a time through the unit of work cost more than the decision
    (docs/benchmarks.md).
    """
    results: list = [None] * len(events)
    valid = []
    for index, (_, kind, _, fields) in enumerate(events):
        try:
            _check(kind, fields)
            valid.append(index)
        except InvalidInput as exc:
            results[index] = exc
    session = db if isinstance(db, Session) else None
    if session is not None and session.new:
        session.flush()  # a record added but not yet written is found, as a query would
    connection = session.connection() if session is not None else db

    rows = _lock_rows(connection, {events[i][0] for i in valid
                                   if not _held_by(session, events[i][0])})
    values = {record_id: _Values(row) for record_id, row in rows.items()}
    outbox = []
    for index in valid:
        record_id, kind, at, fields = events[index]
        if _held_by(session, record_id):
            # A record this session holds (the CLI, a test): through its unit of work, so the
            # object it holds never disagrees with the row.
            held = session.get(CallRecord, record_id, with_for_update=True)
            results[index] = record_event(session, held, kind, at=at, **fields)
            continue
        record = values.get(record_id)
        if record is None:
            results[index] = NotFound(f"no call record {record_id}", field="record_id")
            continue
        applied_at = _apply(record, kind, at, fields)
        if applied_at is None:
            continue
        if record.customer_id is not None:
            outbox.append(_outbox_row(record, kind, applied_at))
        results[index] = dict(vars(record))

    _write(connection, rows, values, outbox)
    return results


def _lock_rows(connection: Connection, record_ids: set[str]) -> dict:
    if not record_ids:
        return {}
    # In id order, so two writers locking overlapping batches queue rather than deadlock.
    query = (select(_RECORDS).where(_RECORDS.c.id.in_(sorted(record_ids)))
             .order_by(_RECORDS.c.id).with_for_update())
    return {row["id"]: row for row in connection.execute(query).mappings()}


def _write(connection: Connection, rows: dict, values: dict, outbox: list[dict]) -> None:
    changed = [
        {"_id": record_id, **{name: getattr(record, name) for name in _MUTABLE}}
        for record_id, record in values.items()
        if any(rows[record_id][name] != getattr(record, name) for name in _MUTABLE)
    ]
    # One row is sent as one row: a list of one would take the driver's pipeline path.
    if changed:
        connection.execute(_UPDATE_RECORD, changed[0] if len(changed) == 1 else changed)
    if outbox:
        connection.execute(_INSERT_EVENT, outbox[0] if len(outbox) == 1 else outbox)


def record_event(
    session: Session, record: CallRecord, kind: str, *, at: datetime, **fields
) -> CallRecord | None:
    """``call_event`` for a record already loaded (and locked) in this session."""
    _check(kind, fields)
    applied_at = _apply(record, kind, at, fields)
    if applied_at is None:
        return None

    if record.customer_id is not None:
        session.add(CallEvent(**_outbox_row(record, kind, applied_at)))
    session.flush()
    return record


class _Values:
    """A record's columns as plain attributes, for the statement path of ``call_event``."""

    def __init__(self, row):
        self.__dict__.update(row)


def _held_by(session: Session | None, record_id: str) -> bool:
    if session is None or not session.identity_map:
        return False  # the adapters' sessions hold nothing: skip the key's cost
    return session.identity_map.get(session.identity_key(CallRecord, record_id)) is not None


def _apply(record, kind: str, at: datetime, fields: dict) -> datetime | None:
    """Apply one event to ``record`` (a CallRecord or _Values) and return its time, kept
    inside the call; None when it changes nothing but, perhaps, a late PBX cause."""
    at = max(as_utc(at), as_utc(record.started_at))
    if not _apply_times(record, kind, at):
        _late_raw_cause(record, kind, fields)
        logger.debug("call %s: %s ignored (record %s)", record.call_uuid, kind, record.id)
        return None

    for name, value in fields.items():
        setattr(record, name, _clip(value, _TEXT_LIMITS[name]) if name in _TEXT_LIMITS
                else value)
    if kind in ("ended", "refused"):
        _close(record, refused=kind == "refused")
    record.updated_at = max(at, as_utc(record.updated_at))
    logger.debug("call %s: %s (record %s)", record.call_uuid, kind, record.id)
    return at


def _late_raw_cause(record: CallRecord, kind: str, fields: dict) -> None:
    """A refusal is closed at decision time; the PBX's own cause for it only comes with the
    hangup event afterwards. Keep that cause, and nothing else of the late event."""
    if kind == "ended" and record.pbx_cause is None and fields.get("pbx_cause"):
        record.pbx_cause = _clip(fields["pbx_cause"], _TEXT_LIMITS["pbx_cause"])


def _check(kind: str, fields: dict) -> None:
    """Adapter bugs surface here, by name, rather than as a database error."""
    if kind not in KINDS:
        raise InvalidInput(f"kind: one of {', '.join(KINDS)}", field="kind")
    unknown = set(fields) - FIELDS
    if unknown:
        raise InvalidInput(f"unknown call-event field {sorted(unknown)[0]}", field="fields")
    for name, value in fields.items():
        if value is not None and not _valid(name, value):
            raise InvalidInput(f"call-event field {name}: bad value {str(value)[:20]!r}",
                               field=name)


def _valid(name: str, value) -> bool:
    if name == "outcome":
        return value in set(Outcome)
    if name == "hangup_by":
        return value in set(HangupBy)
    if name in ("sip_status", "q850_cause"):
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1000
    if name == "reconciled":
        return isinstance(value, bool)
    return isinstance(value, str)


def _apply_times(record: CallRecord, kind: str, at: datetime) -> bool:
    """Set the time ``kind`` stands for; False when the event is a repeat or comes too late.

    PBX events reach the controller over more than one connection (FreeSWITCH's outbound
    socket and the inbound one for the hangup), so they can arrive out of order: times are
    kept in order started <= ringing <= answered <= ended and never moved backwards.
    """
    ringing, answered, ended = (as_utc(record.ringing_at), as_utc(record.answered_at),
                                as_utc(record.ended_at))
    if kind == "ringing":
        if ringing or answered or ended:
            return False
        record.ringing_at = at
    elif kind == "answered":
        if answered:
            return False
        # A late answer after the end still tells the billable time: keep it inside the call.
        answered_at = min(at, ended) if ended else at
        record.answered_at = max(answered_at, ringing) if ringing else answered_at
        if ended:
            record.billsec_s = _seconds(as_utc(record.answered_at), ended)
    else:
        if ended:
            return False
        record.ended_at = max(t for t in (at, ringing, answered) if t is not None)
    return True


def _close(record: CallRecord, refused: bool) -> None:
    started, answered, ended = (as_utc(record.started_at), as_utc(record.answered_at),
                                as_utc(record.ended_at))
    record.duration_s = _seconds(started, ended)
    record.billsec_s = _seconds(answered, ended) if answered else 0
    if record.outcome is None:
        # The adapter names the outcome; reconciliation may not know it.
        record.outcome = "refused" if refused else ("answered" if answered else "failed")


def _outbox_row(record, kind: str, at: datetime) -> dict:
    return dict(event_id=uuid.uuid4().hex, customer_id=record.customer_id, record_id=record.id,
                kind=kind, at=at, payload=record_dict(record, json_safe=True), created_at=at,
                attempts=0, next_attempt_at=at)


def _seconds(start: datetime, end: datetime) -> int:
    # Whole seconds, truncated, as both PBXs count billsec.
    return max(0, int((end - start).total_seconds()))


def _clip(value, limit: int):
    return value[:limit] if isinstance(value, str) else value


def get_record(session: Session, customer_id: int, record_id: str) -> CallRecord:
    record = session.get(CallRecord, record_id) if isinstance(record_id, str) else None
    if record is None or record.customer_id != customer_id:
        raise NotFound(f"no call record {str(record_id)[:40]}", field="record_id")
    return record


def open_records(session: Session, pbx: str, node: str | None) -> list[CallRecord]:
    """This node's records without an end: what reconciliation must ask the PBX about."""
    query = select(CallRecord).where(
        CallRecord.pbx == pbx, CallRecord.node == node, CallRecord.ended_at.is_(None))
    return list(session.scalars(query.order_by(CallRecord.started_at, CallRecord.id)))


def record_dict(record: CallRecord, *, json_safe: bool = False) -> dict:
    """The record as the CLI, the API and webhooks show it; times in UTC.

    ``json_safe`` turns times into ISO 8601 text (the outbox payload is stored as JSON).
    """
    data = {name: getattr(record, name) for name in RECORD_FIELDS}
    for name in _TIMES:
        value = as_utc(data[name])
        data[name] = value.isoformat() if json_safe and value is not None else value
    return data


# -- listing, export, retention ------------------------------------------------------------

PAGE_MAX = 1000
_BATCH = 500


def list_records(
    session: Session, customer_id: int, *, since: datetime | None = None,
    until: datetime | None = None, x: str | None = None, binding_id: str | None = None,
    out_id: str | None = None, limit: int = 100, cursor: str | None = None,
    region: str = "CN",
) -> tuple[list[CallRecord], str | None]:
    """One page of a customer's records, newest first, and the cursor of the next page.

    Pages are cut on (started_at, id), so records written while a client pages through never
    shift or repeat what it has seen. ``since`` is inclusive, ``until`` exclusive.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= PAGE_MAX:
        raise InvalidInput(f"limit: a whole number from 1 to {PAGE_MAX}", field="limit")
    query = _filtered(customer_id, since, until, x, binding_id, out_id, region)
    if cursor is not None:
        query = query.where(_before(*_decode_cursor(cursor)))

    order = (CallRecord.started_at.desc(), CallRecord.id.desc())
    rows = list(session.scalars(query.order_by(*order).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, _encode_cursor(rows[-1])


def export_records(
    session: Session, customer_id: int, fmt: str, out_stream: TextIO, *,
    since: datetime | None = None, until: datetime | None = None, x: str | None = None,
    binding_id: str | None = None, out_id: str | None = None, region: str = "CN",
) -> int:
    """Write the customer's records, oldest first, as CSV or JSON lines; returns the count.

    Streams in batches so an export of millions of records holds only one batch in memory.
    """
    if fmt not in ("csv", "jsonl"):
        raise InvalidInput("format: csv or jsonl", field="format")
    query = _filtered(customer_id, since, until, x, binding_id, out_id, region)
    writer = _csv_writer(out_stream) if fmt == "csv" else None

    count = 0
    for record in _ascending(session, query):
        data = record_dict(record, json_safe=True)
        if writer is None:
            out_stream.write(json.dumps(data, ensure_ascii=False, sort_keys=True) + "\n")
        else:
            writer.writerow([_csv_cell(data[name]) for name in RECORD_FIELDS])
        count += 1
    return count


class PurgeResult(tuple):
    """``(records deleted, recording files deleted)``; ``kept`` names the records kept.

    A record whose recording exists but cannot be deleted (permissions, a directory, a
    relative path that cannot be located) is kept with its path, so the file is never lost
    track of and the next purge tries again; a file already missing is no obstacle.
    """

    kept: tuple[str, ...]

    def __new__(cls, records: int, files: int, kept=()):
        result = super().__new__(cls, (records, files))
        result.kept = tuple(kept)
        return result


def purge_records(
    session: Session, *, older_than: datetime, customer_id: int | None = None
) -> PurgeResult:
    """Delete records started before ``older_than``, their recordings and outbox rows."""
    query = select(CallRecord)
    query = query.where(CallRecord.started_at < _utc(older_than, "older_than"))
    if customer_id is not None:
        query = query.where(CallRecord.customer_id == customer_id)

    records = files = 0
    kept: list[str] = []
    for batch in _batches(_ascending(session, query)):
        gone = []
        for record in batch:
            result = _delete_recording(record)
            files += result == "deleted"
            (kept if result == "failed" else gone).append(record.id)
        _delete_rows(session, gone)
        records += len(gone)
    logger.info("purged %d call records and %d recording files (%d kept)",
                records, files, len(kept))
    return PurgeResult(records, files, kept)


def _delete_recording(record: CallRecord) -> str:
    if not record.recording_path:
        return "none"
    path = Path(record.recording_path)
    if not path.is_absolute():
        logger.warning("record %s: recording path is not absolute, record kept", record.id)
        return "failed"
    try:
        path.unlink()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        logger.warning("record %s: recording not deleted (%s), record kept",
                       record.id, exc.strerror or type(exc).__name__)
        return "failed"
    return "deleted"


def _delete_rows(session: Session, ids: list[str]) -> None:
    if not ids:
        return
    quick = {"synchronize_session": False}
    session.execute(delete(CallEvent).where(CallEvent.record_id.in_(ids)),
                    execution_options=quick)
    session.execute(delete(CallRecord).where(CallRecord.id.in_(ids)), execution_options=quick)


def _filtered(customer_id, since, until, x, binding_id, out_id, region):
    query = select(CallRecord).where(CallRecord.customer_id == customer_id)
    if since is not None:
        query = query.where(CallRecord.started_at >= _utc(since, "since"))
    if until is not None:
        query = query.where(CallRecord.started_at < _utc(until, "until"))
    if x is not None:
        query = query.where(CallRecord.x == parse(x, "x", region))
    if binding_id is not None:
        query = query.where(CallRecord.binding_id == binding_id)
    if out_id is not None:
        query = query.where(CallRecord.out_id == out_id)
    return query


def _ascending(session: Session, query) -> Iterator[CallRecord]:
    """Every row of ``query`` oldest first, fetched in keyset batches."""
    after = None
    while True:
        page = query if after is None else query.where(_after(*after))
        order = (CallRecord.started_at, CallRecord.id)
        rows = list(session.scalars(page.order_by(*order).limit(_BATCH)))
        yield from rows
        if len(rows) < _BATCH:
            return
        after = (as_utc(rows[-1].started_at), rows[-1].id)


def _batches(rows: Iterator[CallRecord]) -> Iterator[list[CallRecord]]:
    # Materialise each batch before deleting, so deletes never disturb the running query.
    batch: list[CallRecord] = []
    for row in rows:
        batch.append(row)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _before(started: datetime, record_id: str):
    return or_(CallRecord.started_at < started,
               and_(CallRecord.started_at == started, CallRecord.id < record_id))


def _after(started: datetime, record_id: str):
    return or_(CallRecord.started_at > started,
               and_(CallRecord.started_at == started, CallRecord.id > record_id))


def _encode_cursor(record: CallRecord) -> str:
    raw = json.dumps([as_utc(record.started_at).isoformat(), record.id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started, record_id = json.loads(raw)
        started = datetime.fromisoformat(started)
        if not isinstance(record_id, str) or started.tzinfo is None:
            raise ValueError(cursor)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidInput("cursor: not a cursor of this listing", field="cursor") from None
    return started.astimezone(UTC), record_id


def _utc(value: datetime, field: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInput(f"{field}: a time with its zone", field=field)
    return value.astimezone(UTC)


def _csv_writer(out_stream: TextIO):
    writer = csv.writer(out_stream)
    writer.writerow(RECORD_FIELDS)
    return writer


def _csv_cell(value):
    """Text a spreadsheet would run as a formula gets a leading quote (caller ids as received
    are attacker-controlled); E.164 numbers keep their '+'."""
    if not isinstance(value, str) or not value:
        return value
    risky = value[0] in "=@\t\r" or (value[0] in "+-" and not value[1:].isdigit())
    return "'" + value if risky else value
