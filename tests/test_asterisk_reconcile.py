"""Reconciliation after a gap, on the ARI double, with a fake core."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace

from pbx_control.asterisk.app import StasisApp
from pbx_control.asterisk.client import AriClient
from pbx_control.asterisk.double import AriDouble
from pbx_control.asterisk.reconcile import reconcile
from pbx_control.config import AsteriskSettings


class Records:
    def __init__(self, open_records):
        self.open = open_records
        self.ended: dict[str, dict] = {}

    def open_records(self):
        return self.open

    def call_event(self, record_id, kind, at=None, **fields):
        self.ended[record_id] = dict(fields, kind=kind)


def record(record_id: str, call_uuid: str, answered: bool) -> SimpleNamespace:
    return SimpleNamespace(id=record_id, call_uuid=call_uuid,
                           answered_at=datetime.now(UTC) if answered else None)


def test_reconcile_hangs_up_legs_left_alone_and_completes_their_records():
    async def scenario():
        async with AriDouble() as ari:
            client = AriClient(ari.url, ari.username, ari.password, ari.app)
            async with client.events():
                await ari.wait_until(lambda: ari.connected)
                lone_caller = await ari.incoming_call("8613900000000", "8617000000001")
                pair_caller = await ari.incoming_call("8613900000001", "8617000000001")
                empty = (await client.create_bridge("call-gone"))["id"]
                bridge = (await client.create_bridge(f"call-{pair_caller}"))["id"]
                await client.add_channel(bridge, pair_caller)
                await client.create_channel("PJSIP/8613800000000@carrier", "bleg-1",
                                            f"bleg,{pair_caller}", pair_caller, {})
                await client.dial("bleg-1", 20)
                await ari.wait_until(lambda: ari.channels["bleg-1"].state == "Up")
                await client.add_channel(bridge, "bleg-1")
            await ari.wait_until(lambda: not ari.connected)
            await ari.party_hangup(pair_caller)  # unseen: bleg-1 stays up alone

            records = Records([record("r-lone", lone_caller, False),
                               record("r-pair", pair_caller, True),
                               record("r-gone", "1.999", False)])
            connected_at = datetime.now(UTC)
            async with client.events():
                await ari.wait_until(lambda: ari.connected)
                fresh = await ari.incoming_call("8613900000002", "8617000000001")
                app = StasisApp(client, records, AsteriskSettings())
                report = await reconcile(client, app, records, connected_at)
            await client.close()
            return ari, report, records, lone_caller, fresh, empty, bridge

    ari, report, records, lone_caller, fresh, empty, bridge = asyncio.run(scenario())
    assert sorted(report.hung_up) == sorted(["bleg-1", lone_caller])
    assert fresh in ari.channels  # created after the connection opened: never touched
    assert sorted(report.bridges_deleted) == sorted([empty, bridge])
    assert records.ended["r-pair"] == {"kind": "ended", "outcome": "answered", "sip_status": 200,
                                       "hangup_by": "caller", "reconciled": True}
    assert records.ended["r-lone"]["outcome"] == "failed"
    assert records.ended["r-lone"]["hangup_by"] == "controller"
    assert records.ended["r-gone"] == {"kind": "ended", "outcome": "failed", "sip_status": None,
                                       "hangup_by": None, "reconciled": True}
