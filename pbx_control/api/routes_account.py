"""/v1/blacklist, /v1/webhook and /healthz."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.encoders import jsonable_encoder
from sqlalchemy import text

from ..blacklist import add_entry, entry_dict, list_entries, remove_entry
from ..errors import StorageUnavailable
from ..keys import Caller
from ..storage.tables import Customer
from .deps import Services, caller, services
from .problems import documented
from .schemas import PRINTABLE, BlacklistBody, BlacklistOut, Health, WebhookBody, WebhookOut
from .targets import WebhookPolicy
from .webhook_config import clear_webhook, set_webhook

logger = logging.getLogger(__name__)

router = APIRouter()

Scope = Annotated[str | None, Query(max_length=32, pattern=PRINTABLE,
                                    description="An X; absent: the whole-customer entry")]


@router.post("/v1/blacklist", status_code=201, response_model=BlacklistOut,
             responses=documented(400, 404, 409), tags=["blacklist"])
def blacklist_add(body: BlacklistBody, who: Caller = Depends(caller),
                  svc: Services = Depends(services)) -> dict:
    """Refuse calls from ``number`` on one X of the pool, or on all of them."""
    with svc.transaction() as session:
        entry = add_entry(session, who.customer_id, body.number, x=body.x, reason=body.reason,
                          now=svc.clock(), region=svc.region)
        return jsonable_encoder(entry_dict(entry))


@router.get("/v1/blacklist", response_model=list[BlacklistOut], responses=documented(400),
            tags=["blacklist"])
def blacklist(who: Caller = Depends(caller), svc: Services = Depends(services),
              x: Annotated[str | None, Query(max_length=32, pattern=PRINTABLE)] = None) -> list:
    """All entries; with ``x`` only those of that X (``x=`` empty: whole-customer ones)."""
    with svc.transaction() as session:
        return [jsonable_encoder(entry_dict(e))
                for e in list_entries(session, who.customer_id, x=x, region=svc.region)]


@router.delete("/v1/blacklist/{number}", status_code=204, response_class=Response,
               responses=documented(400, 404), tags=["blacklist"])
def blacklist_remove(number: Annotated[str, Path(max_length=32, pattern=PRINTABLE)],
                     who: Caller = Depends(caller), svc: Services = Depends(services),
                     x: Scope = None) -> Response:
    """Remove an entry (URL-encode the '+' of a number as %2B)."""
    with svc.transaction() as session:
        remove_entry(session, who.customer_id, number, x=x, region=svc.region)
    return Response(status_code=204)


def _customer(session, who: Caller) -> Customer:
    return session.get(Customer, who.customer_id, with_for_update=True)


@router.put("/v1/webhook", response_model=WebhookOut, responses=documented(400, 422),
            tags=["webhook"])
def webhook_set(body: WebhookBody, who: Caller = Depends(caller),
                svc: Services = Depends(services)) -> dict:
    """Set the URL call events are POSTed to. The signing secret is in the answer only when
    it is created (first PUT) or rotated (``rotate_secret``): keep it then. The first
    registration skips the events of earlier calls: they are not replayed."""
    checked = WebhookPolicy(svc.settings.api, svc.resolver).check(body.url)
    with svc.transaction() as session:
        stored = set_webhook(session, _customer(session, who), checked, now=svc.clock(),
                             rotate_secret=body.rotate_secret)
    return {"url": stored.url, "secret": stored.secret}


@router.get("/v1/webhook", response_model=WebhookOut, responses=documented(),
            tags=["webhook"])
def webhook(who: Caller = Depends(caller), svc: Services = Depends(services)) -> dict:
    with svc.transaction() as session:
        url = session.get(Customer, who.customer_id).webhook_url
    return {"url": url, "secret": None}


@router.delete("/v1/webhook", status_code=204, response_class=Response,
               responses=documented(404), tags=["webhook"])
def webhook_remove(who: Caller = Depends(caller), svc: Services = Depends(services)):
    """Remove the webhook; events from now on are skipped, not kept."""
    with svc.transaction() as session:
        clear_webhook(session, _customer(session, who))
    return Response(status_code=204)


@router.get("/healthz", response_model=Health, responses={503: {"description": "no database"}},
            tags=["health"])
def health(svc: Services = Depends(services)) -> dict:
    """No key needed: 200 when the database answers, 503 otherwise."""
    try:
        with svc.transaction() as session:
            session.execute(text("SELECT 1"))
    except StorageUnavailable:
        raise StorageUnavailable("database unreachable") from None
    return {"status": "ok", "database": "ok"}
