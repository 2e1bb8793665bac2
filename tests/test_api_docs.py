"""What the docs promise about the API holds against a live server: the curl example binds on
a pool provisioned as the README does, and the API serves its document but no page that
loads scripts from elsewhere."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from api_support import LiveServer, make_tenant

from pbx_control.api.app import create_app

ROOT = Path(__file__).resolve().parents[1]
X1, X2 = "+8617000000001", "+8617000000002"


@pytest.fixture
def api(pg_store, settings):
    with LiveServer(create_app(pg_store, settings)) as server:
        yield server


def readme_city() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.search(r"pbx-control numbers add .*--city (\S+)", readme).group(1)


def curl_example() -> tuple[dict, dict]:
    """The headers and JSON body of the bind example in docs/api.md."""
    doc = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    command = re.search(r"curl -X POST \S+/v1/bindings.*?-d '(.*?)'", doc, re.S)
    headers = dict(re.findall(r"-H '([\w-]+): ([^']+)'", command.group(0)))
    return headers, json.loads(command.group(1))


def test_the_curl_example_binds_on_a_pool_provisioned_as_the_readme_shows(api, pg_store):
    tenant = make_tenant(pg_store, "acme", [X1, X2], city=readme_city())
    headers, body = curl_example()

    with api.client(tenant.key) as client:
        response = client.post("/v1/bindings", json=body, headers=headers)

    assert response.status_code == 201, response.text
    assert response.json()["x"] in (X1, X2)


@pytest.mark.parametrize("path", ["/v1/docs", "/v1/redoc", "/docs", "/redoc"])
def test_no_interactive_docs_page_is_served(api, path):
    with api.client() as anonymous:
        response = anonymous.get(path)
    assert response.status_code in (401, 404), response.text
    assert "cdn" not in response.text.lower()


def test_the_openapi_document_stays_at_its_path_without_a_key(api):
    with api.client() as anonymous:
        response = anonymous.get("/v1/openapi.json")
    assert response.status_code == 200
    assert "/v1/bindings" in response.json()["paths"]
