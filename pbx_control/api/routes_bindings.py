"""/v1/bindings: bind (with idempotent retries), query, update, unbind."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from ..bindings import (
    UNSET,
    BindRequest,
    bind_or_retry,
    binding_dict,
    find_bindings,
    get_binding,
    parse_expires,
    unbind,
    update_binding,
)
from ..errors import InvalidInput
from ..keys import Caller
from ..storage.tables import Binding, Group
from . import idempotency
from .deps import Services, caller, services
from .problems import documented
from .schemas import PRINTABLE, BindBody, BindingOut, BindingPage, BindingPatch, Number

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/bindings", tags=["bindings"])

BindingId = Annotated[str, Path(pattern=r"^[A-Za-z0-9]{1,32}$")]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$",
    description="Retries with the same key and body get the first answer again")]


def _out(session, binding: Binding) -> dict:
    group = session.get(Group, binding.group_id) if binding.group_id else None
    shown = BindingOut.model_validate(binding_dict(binding, group.name if group else None))
    return shown.model_dump(mode="json")


def _expires(text: str | None, now):
    if text is None:
        return None
    try:
        return parse_expires(text, now)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, field="expires_at", code=exc.code) from None


def _bind_request(body: BindBody, now) -> BindRequest:
    fields = body.model_dump(exclude={"expires_at"})
    return BindRequest(expires_at=_expires(body.expires_at, now), **fields)


@router.post("", status_code=201, response_model=BindingOut,
             responses={200: {"model": BindingOut, "description": "A retry with the same "
                              "out_id and body: the binding it created first"},
                        **documented(400, 404, 409, 422)})
def create_binding(body: BindBody, who: Caller = Depends(caller),
                   svc: Services = Depends(services),
                   idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Bind. 201 with a new binding; 200 when an active binding with this out_id and the
    same body exists; the answer stored for an Idempotency-Key repeats as it was."""
    digest = idempotency.request_hash(body.model_dump(mode="json"))
    now = svc.clock()
    try:
        with svc.transaction() as session:
            answer = _bind_once(session, who, body, digest, idempotency_key, now, svc)
    except IntegrityError:
        if idempotency_key is None:
            raise
        # A concurrent request with the same key committed first: answer as it did.
        with svc.transaction() as session:
            answer = idempotency.stored_answer(session, who.customer_id, idempotency_key,
                                               digest)
        if answer is None:
            raise
    return JSONResponse(answer[1], status_code=answer[0])


def _bind_once(session, who: Caller, body: BindBody, digest: str, key: str | None, now,
               svc: Services) -> tuple[int, dict]:
    if key is not None:
        stored = idempotency.stored_answer(session, who.customer_id, key, digest)
        if stored is not None:
            return stored
        idempotency.reserve(session, who.customer_id, key, digest, now)

    # Only the core can tell a repeat: concurrent retries all find no binding beforehand.
    binding, created = bind_or_retry(session, who.customer_id, _bind_request(body, now),
                                     now=now, settings=svc.settings, region=svc.region)
    status = 201 if created else 200

    data = _out(session, binding)
    if key is not None:
        idempotency.complete(session, who.customer_id, key, status, data)
    return status, data


@router.get("", response_model=BindingPage, responses=documented(400))
def list_bindings(
    who: Caller = Depends(caller), svc: Services = Depends(services),
    x: Annotated[Number | None, Query()] = None,
    party: Annotated[Number | None, Query(description="A or B of the binding")] = None,
    out_id: Annotated[str | None, Query(max_length=128, pattern=PRINTABLE)] = None,
    active: bool = True,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9]{1,32}$")] = None,
) -> dict:
    """The customer's bindings in creation order, by X, party or out_id; pages by cursor."""
    with svc.transaction() as session:
        _check_cursor(session, who.customer_id, cursor)
        rows = find_bindings(session, who.customer_id, x=x, party=party, out_id=out_id,
                             active=active, limit=limit + 1, after=cursor, region=svc.region)
        items = [_out(session, b) for b in rows[:limit]]
    return {"items": items, "next_cursor": rows[limit - 1].id if len(rows) > limit else None}


def _check_cursor(session, customer_id: int, cursor: str | None) -> None:
    # A cursor is the id of the last binding of a page, and bindings are never deleted: one
    # that names none of the customer's is forged or mistyped, not the end of the listing.
    if cursor is None:
        return
    binding = session.get(Binding, cursor)
    if binding is None or binding.customer_id != customer_id:
        raise InvalidInput("cursor: not a cursor of this listing", field="cursor")


@router.get("/{binding_id}", response_model=BindingOut, responses=documented(400, 404))
def read_binding(binding_id: BindingId, who: Caller = Depends(caller),
                 svc: Services = Depends(services)) -> dict:
    with svc.transaction() as session:
        return _out(session, get_binding(session, who.customer_id, binding_id))


@router.patch("/{binding_id}", response_model=BindingOut,
              responses=documented(400, 404, 409, 422))
def patch_binding(binding_id: BindingId, body: BindingPatch, who: Caller = Depends(caller),
                  svc: Services = Depends(services)) -> dict:
    """Change the expiry, a party or the default party of an active binding."""
    now = svc.clock()
    given = body.model_fields_set
    _check_patch(body, given)
    changes = {name: getattr(body, name) if name in given else UNSET
               for name in ("a", "b", "default_party")}
    if "expires_at" in given:
        changes["expires_at"] = _expires(body.expires_at, now)

    with svc.transaction() as session:
        binding = update_binding(session, who.customer_id, binding_id, now=now,
                                 settings=svc.settings, region=svc.region, **changes)
        return _out(session, binding)


def _check_patch(body: BindingPatch, given: set[str]) -> None:
    if not given:
        raise InvalidInput("nothing to update: give expires_at, a, b or default_party")
    for party in ("a", "b"):
        if party in given and getattr(body, party) is None:
            raise InvalidInput(f"{party}: cannot be removed; give a number to change it",
                               field=party)


@router.delete("/{binding_id}", response_model=BindingOut, responses=documented(400, 404, 422))
def delete_binding(binding_id: BindingId, who: Caller = Depends(caller),
                   svc: Services = Depends(services)) -> dict:
    """Unbind: the binding ends now; the answer shows it ended."""
    with svc.transaction() as session:
        binding = unbind(session, who.customer_id, binding_id, now=svc.clock(),
                         settings=svc.settings)
        return _out(session, binding)
