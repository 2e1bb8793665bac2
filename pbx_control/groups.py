"""AXG allow-groups: the callers who may reach A through X, edited apart from the binding."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .customers import check_name
from .errors import Conflict, InvalidInput, NotFound
from .numbers import parse
from .storage.tables import Binding, Group, GroupMember

logger = logging.getLogger(__name__)


def get_group(session: Session, customer_id: int, name: str) -> Group:
    group = session.scalar(select(Group).where(
        Group.customer_id == customer_id, Group.name == name))
    if group is None:
        raise NotFound(f"no group {name!r}", field="group")
    return group


def create_group(session: Session, customer_id: int, name: str, now: datetime) -> Group:
    name = check_name(name, "group")
    exists = session.scalar(select(Group.id).where(
        Group.customer_id == customer_id, Group.name == name))
    if exists is not None:
        raise Conflict(f"group {name!r} exists", field="group", code="group_exists")

    group = Group(customer_id=customer_id, name=name, created_at=now)
    session.add(group)
    session.flush()
    logger.info("group %s created", name)
    return group


def _parse_all(numbers: Iterable[str], region: str) -> list[str]:
    parsed = sorted({parse(n, "member", region) for n in numbers})
    if not parsed:
        raise InvalidInput("member: give at least one number", field="member")
    return parsed


def add_members(
    session: Session, customer_id: int, name: str, numbers: Iterable[str], now: datetime,
    region: str = "CN",
) -> list[str]:
    """Add numbers to the group; returns those that were not members yet."""
    wanted = _parse_all(numbers, region)
    group = get_group(session, customer_id, name)

    present = group_members(session, group.id)
    added = [n for n in wanted if n not in present]
    session.add_all(GroupMember(group_id=group.id, number=n, created_at=now) for n in added)
    session.flush()
    logger.info("group %s: %d members added", name, len(added))
    return added


def remove_members(
    session: Session, customer_id: int, name: str, numbers: Iterable[str], region: str = "CN",
) -> list[str]:
    """Remove numbers from the group; returns those that were members."""
    wanted = _parse_all(numbers, region)
    group = get_group(session, customer_id, name)

    present = group_members(session, group.id)
    removed = [n for n in wanted if n in present]
    if removed:
        session.execute(delete(GroupMember).where(
            GroupMember.group_id == group.id, GroupMember.number.in_(removed)))
    logger.info("group %s: %d members removed", name, len(removed))
    return removed


def delete_group(session: Session, customer_id: int, name: str) -> None:
    group = get_group(session, customer_id, name)
    in_use = session.scalar(select(Binding.id).where(
        Binding.group_id == group.id, Binding.ended_at.is_(None)).limit(1))
    if in_use is not None:
        raise Conflict(f"group {name!r} is used by binding {in_use}", field="group",
                       code="group_in_use")
    session.execute(delete(GroupMember).where(GroupMember.group_id == group.id))
    session.delete(group)
    session.flush()


def group_members(session: Session, group_id: int) -> frozenset[str]:
    query = select(GroupMember.number).where(GroupMember.group_id == group_id)
    return frozenset(session.scalars(query))


def list_groups(session: Session, customer_id: int) -> list[tuple[Group, frozenset[str]]]:
    groups = session.scalars(select(Group).where(Group.customer_id == customer_id)
                             .order_by(Group.name))
    return [(g, group_members(session, g.id)) for g in groups]
