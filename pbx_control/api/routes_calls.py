"""/v1/calls: the customer's call records, one by id, and a record's recording file."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse

from ..cli.cdr import parse_when
from ..errors import NotFound
from ..keys import Caller
from ..records import get_record, list_records, record_dict
from .deps import Services, caller, services
from .problems import documented
from .public import public_record
from .schemas import PRINTABLE, CallOut, CallPage, Number

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/calls", tags=["calls"])

# What the PBXs record to (FreeSWITCH record_session, Asterisk MixMonitor): wav, or mp3/ogg
# where configured. Fixed here rather than guessed from the host's MIME table.
MEDIA_TYPES = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg"}
RecordId = Annotated[str, Path(pattern=r"^[A-Za-z0-9]{1,32}$")]
Ident = Annotated[str | None, Query(min_length=1, max_length=128, pattern=PRINTABLE)]


When = Annotated[str | None, Query(
    min_length=1, max_length=64, pattern=PRINTABLE,
    description="An ISO 8601 time with its zone (a '+' as %2B), or a duration meaning that "
                "long ago: '90s', '30m', '2h', '7d', '2w' (as `pbx-control cdr list` takes)")]


def _when(text: str | None, now: datetime, field: str) -> datetime | None:
    # The CLI's parser, so that a filter copied from `cdr list --since` works here too.
    return parse_when(text, now, field) if text is not None else None


@router.get("", response_model=CallPage, responses=documented(400))
def calls(
    who: Caller = Depends(caller), svc: Services = Depends(services),
    since: When = None,
    until: When = None,
    x: Annotated[Number | None, Query()] = None,
    binding_id: Ident = None, out_id: Ident = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512, pattern=r"^[A-Za-z0-9_-]+$")] = None,
) -> dict:
    """Newest first, from ``since`` (inclusive) to ``until`` (exclusive); ``next_cursor``
    continues where this page ended."""
    now = svc.clock()
    with svc.transaction() as session:
        rows, next_cursor = list_records(
            session, who.customer_id, since=_when(since, now, "since"),
            until=_when(until, now, "until"), x=x, binding_id=binding_id, out_id=out_id,
            limit=limit, cursor=cursor, region=svc.region)
        items = [jsonable_encoder(public_record(record_dict(r))) for r in rows]
    return {"items": items, "next_cursor": next_cursor}


@router.get("/{record_id}", response_model=CallOut, responses=documented(400, 404))
def call(record_id: RecordId, who: Caller = Depends(caller),
         svc: Services = Depends(services)) -> dict:
    with svc.transaction() as session:
        return jsonable_encoder(public_record(record_dict(
            get_record(session, who.customer_id, record_id))))


@router.get("/{record_id}/recording", response_class=FileResponse,
            responses={200: {"content": {t: {} for t in (*MEDIA_TYPES.values(),
                                                          "application/octet-stream")}},
                       **documented(400, 404)})
def recording(record_id: RecordId, who: Caller = Depends(caller),
              svc: Services = Depends(services)) -> FileResponse:
    """The recording of one of the customer's calls, streamed; 404 when there is none."""
    with svc.transaction() as session:
        path = get_record(session, who.customer_id, record_id).recording_path

    file = _inside_recordings(path, svc)
    media_type = MEDIA_TYPES.get(file.suffix.lower(), "application/octet-stream")
    return FileResponse(file, media_type=media_type, filename=f"{record_id}{file.suffix}")


def _inside_recordings(path: str | None, svc: Services) -> FilePath:
    """The file, if it exists inside a configured recordings directory.

    The path comes from PBX events; holding it to the recordings directories means a bad
    event can never make the API serve another file of this host.
    """
    if not path:
        raise NotFound("this call has no recording", field="record_id", code="no_recording")
    roots = [FilePath(d).resolve() for d in (svc.settings.freeswitch.recordings_dir,
                                             svc.settings.asterisk.recordings_dir) if d]
    file = FilePath(path).resolve()
    if not any(file.is_relative_to(root) for root in roots) or not file.is_file():
        logger.warning("recording of a call is missing or outside the recordings directories")
        raise NotFound("this call's recording is not available", field="record_id",
                       code="no_recording")
    return file
