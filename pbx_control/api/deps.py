"""What every route depends on: the services of the app and the caller found from its key."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..config import Settings
from ..keys import Caller, verify_key
from ..storage import Store
from .ratelimit import RateLimiter
from .targets import Resolver

logger = logging.getLogger(__name__)

bearer = HTTPBearer(auto_error=False, scheme_name="apiKey",
                    description="An API key from `pbx-control keys create`.")


@dataclass
class Services:
    """Handed to ``create_app``; routes reach it through ``request.app.state``."""

    store: Store
    settings: Settings
    clock: Callable[[], datetime]
    limiter: RateLimiter
    resolver: Resolver

    @property
    def region(self) -> str:
        return self.settings.default_region

    @contextmanager
    def transaction(self):
        with self.store.session() as session:
            yield session


def services(request: Request) -> Services:
    return request.app.state.services


def caller(
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    svc: Services = Depends(services),
) -> Caller:
    """Authenticate the key (401/403), then spend a token of the customer's bucket (429)."""
    key = credentials.credentials if credentials is not None else None
    with svc.transaction() as session:
        who = verify_key(session, key)

    svc.limiter.take(who.customer_id)
    return who
