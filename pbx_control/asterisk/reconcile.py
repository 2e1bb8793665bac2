"""Reconciliation after every (re)connect: what Asterisk kept up while nobody listened.

Asterisk drops the application's events while its WebSocket is away and keeps its calls up
(case5a): a far leg whose caller hung up in the gap stays up alone for ever, a caller whose
far side left sits alone in the bridge (case10), and call records never hear the end. So:
list the application's channels and bridges, let live calls judge their own legs, hang up
legs left alone, delete empty bridges, and complete the records of calls nobody follows,
marked ``reconciled``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..causes import HangupBy, Outcome
from ..errors import StorageUnavailable
from .app import StasisApp
from .client import AriClient, AriError, AriNotFound
from .entry import far_leg_owner_of_channel

logger = logging.getLogger(__name__)


@dataclass
class Report:
    hung_up: list[str] = field(default_factory=list)
    bridges_deleted: list[str] = field(default_factory=list)
    records_completed: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)


async def reconcile(client: AriClient, app: StasisApp, calls, connected_at: datetime) -> Report:
    """One pass. Channels created after ``connected_at`` are new calls whose StasisStart may
    still be on its way: they are never touched."""
    listed_at = time.monotonic()
    application = await client.application()
    channels = {c["id"]: c for c in await client.list_channels()}
    ours = set(application.get("bridge_ids") or [])
    bridges = [b for b in await client.list_bridges() if b.get("id") in ours]
    app.reconciled(set(channels), listed_at)

    # Asterisk stamps creation in whole milliseconds: compare at that precision, or a call
    # that arrived in the same millisecond as the connection would count as left over.
    # (One clock: ARI is on loopback by the contract; a remote Asterisk needs NTP.)
    connected_at = connected_at.replace(microsecond=connected_at.microsecond // 1000 * 1000)
    report = Report()
    followed = app.followed()
    old = {cid for cid, c in channels.items() if _created(c) < connected_at} - followed
    mine = old & set(application.get("channel_ids") or [])
    fars = {cid: far_leg_owner_of_channel(channels[cid]) for cid in mine}
    fars = {cid: owner for cid, owner in fars.items() if owner is not None}

    open_records = await _open_records(calls)
    await _hang_up_alone(client, mine, fars, channels, bridges, report)
    _adopt_pairs(app, mine, fars, channels, bridges, open_records, report)
    followed = app.followed()
    old_bridges = [b for b in bridges if _created(b) < connected_at
                   and b.get("name", "").removeprefix("call-") not in followed]
    await _delete_empty_bridges(client, old_bridges, followed, report)
    await _complete_records(calls, open_records, followed, channels, fars, report)
    logger.info("reconciled: %d legs hung up, %d bridges deleted, %d records completed, "
                "%d calls adopted", len(report.hung_up), len(report.bridges_deleted),
                len(report.records_completed), len(report.adopted))
    return report


async def _hang_up_alone(client, mine, fars, channels, bridges, report: Report) -> None:
    in_bridge = {cid: b for b in bridges for cid in b.get("channels") or []}
    for channel_id in sorted(mine):
        owner = fars.get(channel_id)
        if owner is not None:
            alone = owner not in channels
        else:
            bridge = in_bridge.get(channel_id)
            # A caller with nobody in its bridge, or never bridged: the call cannot go on.
            alone = bridge is None or len(bridge.get("channels") or []) < 2
        if alone and await _hangup(client, channel_id):
            report.hung_up.append(channel_id)


async def _delete_empty_bridges(client, bridges, followed, report: Report) -> None:
    for bridge in bridges:
        members = set(bridge.get("channels") or [])
        if members & followed or (members - set(report.hung_up)):
            continue
        try:
            await client.delete_bridge(bridge["id"])
            report.bridges_deleted.append(bridge["id"])
        except AriNotFound:
            pass


def _adopt_pairs(app, mine, fars, channels, bridges, open_records, report: Report) -> None:
    """A bridged call a previous controller left up (a restart): follow it from here on, so
    that its end is seen and its record completed like any other."""
    by_uuid = {r.call_uuid: r for r in open_records if r.call_uuid}
    for bridge in bridges:
        members = bridge.get("channels") or []
        if len(members) != 2 or not set(members) <= mine - set(report.hung_up):
            continue
        far = next((c for c in members if fars.get(c)), None)
        caller = fars.get(far) if far else None
        record = by_uuid.get(caller)
        if caller in members and record is not None:
            app.adopt(channels[caller], far, bridge["id"], record.id)
            report.adopted.append(caller)


async def _open_records(calls) -> list:
    try:
        return await asyncio.to_thread(calls.open_records)
    except StorageUnavailable:
        logger.warning("reconcile: open records not read (storage unavailable)")
        return []


async def _complete_records(calls, records, followed, channels, fars, report: Report) -> None:
    alive = set(channels) - set(report.hung_up)
    far_of = {owner: cid for cid, owner in fars.items() if owner}
    for record in records:
        uuid = record.call_uuid
        if not uuid or uuid in followed or uuid in alive:
            continue
        fields = _end_fields(record, caller_was_up=uuid in channels,
                             far_was_up=far_of.get(uuid) in channels)
        try:
            await asyncio.to_thread(calls.call_event, record.id, "ended",
                                    at=datetime.now(UTC), **fields)
            report.records_completed.append(record.id)
        except StorageUnavailable:
            logger.warning("reconcile: record %s not completed (storage unavailable)", record.id)


def _end_fields(record, caller_was_up: bool, far_was_up: bool) -> dict:
    """What can be said of a call whose end was not seen: answered or not, and who was left."""
    answered = record.answered_at is not None
    hangup_by = None
    if caller_was_up:
        # Answered: the far side left it alone in the bridge. Not answered: it was never
        # connected, and this reconciliation ends it.
        hangup_by = (HangupBy.CALLEE if answered else HangupBy.CONTROLLER).value
    elif far_was_up:
        hangup_by = HangupBy.CALLER.value  # the far leg was left alone
    return {"outcome": (Outcome.ANSWERED if answered else Outcome.FAILED).value,
            "sip_status": 200 if answered else None, "hangup_by": hangup_by,
            "reconciled": True}


async def _hangup(client: AriClient, channel_id: str) -> bool:
    try:
        await client.hangup(channel_id)
        return True
    except AriNotFound:
        return False
    except AriError as exc:
        logger.warning("reconcile: hang-up of %s failed: %s", channel_id, exc)
        return False


def _created(channel: dict) -> datetime:
    """Asterisk's ``creationtime`` (``2026-12-04T05:02:03.081+0000``); unknown = long ago."""
    try:
        return datetime.strptime(channel.get("creationtime", ""), "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
