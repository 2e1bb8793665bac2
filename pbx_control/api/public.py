"""What a customer sees of a call record, in the API and in webhook deliveries."""

from __future__ import annotations

# Server-side details: the recording's path on the PBX host and the tenant id.
HIDDEN = ("recording_path", "customer_id")


def public_record(data: dict) -> dict:
    shown = {k: v for k, v in data.items() if k not in HIDDEN}
    shown["has_recording"] = bool(data.get("recording_path"))
    return shown
