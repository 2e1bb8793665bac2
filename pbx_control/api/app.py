"""The FastAPI application: built from a Store and Settings handed in, nothing global."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from fastapi import FastAPI

from .. import __version__
from ..config import Settings
from ..storage import Store
from ..storage.db import utcnow
from . import openapi, problems, routes_account, routes_bindings, routes_calls, routes_pool
from .bodylimit import BodyLimit
from .deps import Services
from .ratelimit import RateLimiter
from .requestlog import RequestLog
from .targets import Resolver, system_resolver
from .webhooks import WebhookPusher

logger = logging.getLogger(__name__)

DESCRIPTION = """Provision privacy-number bindings, read call records, receive call events.

Every request under /v1 carries `Authorization: Bearer <key>`. Errors are problem documents
(`application/problem+json`) with a stable `code` and the `field` concerned."""


def create_app(store: Store | None, settings: Settings, *,
               clock: Callable[[], datetime] = utcnow, resolver: Resolver = system_resolver,
               pusher: WebhookPusher | None = None) -> FastAPI:
    """The API on ``store``; with ``pusher`` the webhook loop runs beside it."""
    # No Swagger UI or ReDoc: FastAPI's pages load their scripts from a CDN, so they are blank
    # offline and make an operator's browser fetch third-party code. The document stays.
    app = FastAPI(title="pbx-control API", version=__version__, description=DESCRIPTION,
                  openapi_url="/v1/openapi.json", docs_url=None, redoc_url=None,
                  lifespan=_lifespan(pusher))
    limiter = RateLimiter(settings.api.rate_limit_per_s, settings.api.rate_limit_burst)
    app.state.services = Services(store, settings, clock, limiter, resolver)

    problems.install(app)
    app.add_middleware(BodyLimit)
    app.add_middleware(RequestLog)
    for module in (routes_bindings, routes_pool, routes_calls, routes_account):
        app.include_router(module.router)
    openapi.install(app)
    return app


def _lifespan(pusher: WebhookPusher | None):
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if pusher is None:
            yield
            return
        stop = asyncio.Event()
        task = asyncio.create_task(pusher.run(stop), name="webhook-pusher")
        try:
            yield
        finally:
            stop.set()
            try:
                await asyncio.wait_for(task, 15)
            except TimeoutError:
                logger.warning("webhook pusher did not stop in time; cancelled")

    return lifespan
