"""A bounded schemathesis run against the served OpenAPI document: no answer is a 5xx, and
every answer matches the document (status, content type, body schema).

Run over real HTTP against PostgreSQL, with a few examples per operation so that it stays
well under a minute in the suite; docs/api.md shows the longer run.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from api_support import LiveServer, make_tenant
from hypothesis import HealthCheck, settings
from schemathesis import checks

from pbx_control.api.app import create_app
from pbx_control.config import Settings
from pbx_control.storage import Store
from pbx_control.storage.tables import Base

# A few examples per operation in the suite; PBX_CONTROL_FUZZ_EXAMPLES=1000 for a long run.
EXAMPLES = int(os.environ.get("PBX_CONTROL_FUZZ_EXAMPLES", "20"))
LONG_RUN = "PBX_CONTROL_FUZZ_EXAMPLES" in os.environ  # then random, not the fixed seed
CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_schema_conformance]


@pytest.fixture(scope="module")
def live(pg_url):
    store = Store(pg_url, application_name="pbx-control-fuzz")
    with store.engine.begin() as conn:  # the run's database holds earlier tests' rows
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    config = Settings()
    config.api.rate_limit_per_s = 10_000
    config.api.rate_limit_burst = 10_000
    tenant = make_tenant(store, "fuzz",
                         ["+8613900000001", "+8613900000002"])
    # Resolve nothing: a fuzzed webhook URL must never make the test reach out anywhere.
    app = create_app(store, config, resolver=lambda host, port: [])
    with LiveServer(app) as server:
        yield server, tenant.key
    store.dispose()


# The document the server serves is the app's own (a test in test_api_resources checks the
# served one against it); loading it at collection lets pytest parametrize by operation.
schema = schemathesis.openapi.from_dict(create_app(None, Settings()).openapi())


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=not LONG_RUN,
          suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx_or_off_its_document(case, live):
    server, key = live
    case.call_and_validate(base_url=server.url, headers={"Authorization": f"Bearer {key}"},
                           checks=CHECKS)
