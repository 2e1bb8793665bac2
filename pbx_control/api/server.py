"""``pbx-control serve api``: uvicorn with the API and the webhook pusher in one process."""

from __future__ import annotations

import logging

import uvicorn

from ..config import Settings
from ..storage import Store
from .app import create_app
from .webhooks import WebhookPusher

logger = logging.getLogger(__name__)


def run(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    store = Store(settings.database_url, application_name="pbx-control-api")
    pusher = WebhookPusher(store, settings)
    app = create_app(store, settings, pusher=pusher)

    host = host or settings.api.listen_host
    port = settings.api.listen_port if port is None else port
    logger.info("API listening on %s:%s", host, port)
    try:
        # proxy_headers off: nothing here may trust a client's X-Forwarded-For. uvicorn's
        # access log is off: it prints paths and queries, which carry phone numbers;
        # requestlog.RequestLog logs route templates instead.
        uvicorn.run(app, host=host, port=port, proxy_headers=False, server_header=False,
                    log_config=None, access_log=False)
    finally:
        store.dispose()
