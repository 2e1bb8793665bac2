"""/v1/numbers and /v1/groups: the customer's pool and its AXG allow-groups."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.encoders import jsonable_encoder

from ..errors import InvalidInput
from ..groups import add_members, create_group, get_group, group_members, list_groups
from ..groups import remove_members as remove_group_members
from ..keys import Caller
from ..pool import list_numbers, number_counts, number_dict
from ..routing import NumberState
from ..storage.tables import Group, Number
from .deps import Services, caller, services
from .problems import documented
from .schemas import (
    ID_PATTERN,
    PRINTABLE,
    GroupBody,
    GroupOut,
    MembersBody,
    MembersOut,
    NumberCount,
    NumberPage,
)

router = APIRouter(tags=["numbers and groups"])

GroupName = Annotated[str, Path(pattern=ID_PATTERN)]
Label = Annotated[str | None, Query(min_length=1, max_length=64, pattern=PRINTABLE)]


@router.get("/v1/numbers", response_model=NumberPage, responses=documented(400))
def numbers(
    who: Caller = Depends(caller), svc: Services = Depends(services),
    state: NumberState | None = None, city: Label = None, carrier: Label = None,
    capability: Annotated[str | None, Query(pattern="^(voice|sms)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,9}$")] = None,
) -> dict:
    """The customer's pool numbers in import order, filtered by state, city, carrier."""
    with svc.transaction() as session:
        _check_cursor(session, who.customer_id, cursor)
        rows = list_numbers(session, who.customer_id, state=state, city=city, carrier=carrier,
                            capability=capability, limit=limit + 1,
                            after_id=int(cursor) if cursor else None)
        items = [jsonable_encoder(number_dict(n)) for n in rows[:limit]]
    more = len(rows) > limit
    return {"items": items, "next_cursor": str(rows[limit - 1].id) if more else None}


def _check_cursor(session, customer_id: int, cursor: str | None) -> None:
    # The id of the last number of a page; pool numbers are retired, never deleted.
    if cursor is None:
        return
    number = session.get(Number, int(cursor))
    if number is None or number.customer_id != customer_id:
        raise InvalidInput("cursor: not a cursor of this listing", field="cursor")


@router.get("/v1/numbers/counts", response_model=list[NumberCount], responses=documented())
def counts(who: Caller = Depends(caller), svc: Services = Depends(services)) -> list:
    """How many numbers the pool holds per city and state."""
    with svc.transaction() as session:
        return number_counts(session, who.customer_id)


def _group_out(group: Group, members) -> dict:
    return {"id": group.id, "name": group.name, "members": sorted(members),
            "created_at": group.created_at}


@router.post("/v1/groups", status_code=201, response_model=GroupOut,
             responses=documented(400, 409))
def new_group(body: GroupBody, who: Caller = Depends(caller),
              svc: Services = Depends(services)) -> dict:
    """Create an allow-group for AXG bindings, with its first members."""
    now = svc.clock()
    with svc.transaction() as session:
        group = create_group(session, who.customer_id, body.name, now)
        if body.members:
            add_members(session, who.customer_id, group.name, body.members, now,
                        region=svc.region)
        return _group_out(group, group_members(session, group.id))


@router.get("/v1/groups", response_model=list[GroupOut], responses=documented())
def groups(who: Caller = Depends(caller), svc: Services = Depends(services)) -> list:
    with svc.transaction() as session:
        return [_group_out(g, m) for g, m in list_groups(session, who.customer_id)]


@router.get("/v1/groups/{name}", response_model=GroupOut, responses=documented(400, 404))
def group(name: GroupName, who: Caller = Depends(caller),
          svc: Services = Depends(services)) -> dict:
    with svc.transaction() as session:
        found = get_group(session, who.customer_id, name)
        return _group_out(found, group_members(session, found.id))


@router.post("/v1/groups/{name}/members", response_model=MembersOut,
             responses=documented(400, 404))
def add_group_members(name: GroupName, body: MembersBody, who: Caller = Depends(caller),
                      svc: Services = Depends(services)) -> dict:
    """Add numbers; ``changed`` lists those that were not members yet."""
    with svc.transaction() as session:
        added = add_members(session, who.customer_id, name, body.members, svc.clock(),
                            region=svc.region)
        found = get_group(session, who.customer_id, name)
        return {"changed": added, "group": _group_out(found, group_members(session, found.id))}


@router.delete("/v1/groups/{name}/members/{number}", response_model=MembersOut,
               responses=documented(400, 404))
def remove_group_member(
    name: GroupName, number: Annotated[str, Path(max_length=32, pattern=PRINTABLE)],
    who: Caller = Depends(caller), svc: Services = Depends(services),
) -> dict:
    """Remove one number (URL-encode its '+' as %2B); ``changed`` is empty if it was not
    a member."""
    with svc.transaction() as session:
        removed = remove_group_members(session, who.customer_id, name, [number],
                                       region=svc.region)
        found = get_group(session, who.customer_id, name)
        return {"changed": removed,
                "group": _group_out(found, group_members(session, found.id))}
