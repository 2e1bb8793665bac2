"""The OpenAPI document as this API serves it at /v1/openapi.json and as docs/ keeps it.

FastAPI documents its own 422 validation body; this API answers every error with a problem
document instead (validation errors as 400), so the generated document is corrected here.
``python -m pbx_control.api.openapi > docs/openapi.json`` writes the checked-in copy.
"""

from __future__ import annotations

import json
import sys

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .problems import MEDIA_TYPE, TITLES
from .schemas import Problem

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def build(app: FastAPI) -> dict:
    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Problem"] = Problem.model_json_schema()

    for path in doc.get("paths", {}).values():
        for operation in path.values():
            _problem_answers(operation)
    return doc


def _problem_answers(operation: dict) -> None:
    answers = operation.setdefault("responses", {})
    if operation.get("parameters") or operation.get("requestBody"):
        answers.setdefault("400", {})
    if operation.get("requestBody"):
        answers.setdefault("413", {})  # bodylimit.BodyLimit, before any route runs
    answers.setdefault("500", {})
    for status, answer in answers.items():
        if int(status) >= 400:
            answer["description"] = TITLES.get(int(status), "Error")
            answer["content"] = {MEDIA_TYPE: {"schema": PROBLEM_REF}}


def install(app: FastAPI) -> None:
    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi


def dumps(app: FastAPI) -> str:
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    from ..config import Settings
    from .app import create_app

    sys.stdout.write(dumps(create_app(None, Settings())))


if __name__ == "__main__":
    main()
