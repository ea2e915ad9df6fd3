"""The API's error answers, documented once for every operation in ``/openapi.json``.

Every error leaves through ``core/errors.py`` as ``{"detail": "…"}`` — with ``field`` when one
input is to blame and ``errors`` (one entry per field) when the request did not validate — so
the schema of each error status is that one shape, not FastAPI's default ``HTTPValidationError``
(which describes a list the API never sends). Which statuses an operation can answer follows
from what it is, so they are added here rather than repeated on each route:

- 400 and 413: it takes a body (which may not parse at all, or be over its limit: ``core/body_limit.py``);
- 401 and 403: it needs a bearer token (missing, expired, revoked; or the role may not do it);
- 404: it names a resource in its path (which may not exist, or not be yours);
- 409: it writes (a unique value taken meanwhile: see ``core.errors.database_refusal``);
- 422: it takes input (parameters or a body).

A route declares anything else it can answer (a 429, a 202) in ``responses=``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

WRITE_METHODS = ("post", "put", "patch", "delete")


class ErrorOut(BaseModel):
    """Every error answer of the API."""

    detail: str = Field(description="What went wrong, in the caller's language (Chinese by default)")
    field: str | None = Field(None, description="The input to blame, when there is one")
    errors: list[dict[str, Any]] | None = Field(
        None, description='Each invalid input: {"field", "message", "type"} for a request that did not validate, '
                          '{"row", "column", "message"} for an import file')


ERROR_DESCRIPTIONS = {
    "400": "The request body could not be read (not valid JSON, form data or multipart)",
    "401": "Not authenticated: no bearer token, or an expired or revoked one",
    "403": "Your role or accounts do not allow this",
    "404": "Not found (or not yours to see)",
    "413": "The body is larger than its limit (SIYU_MAX_BODY_BYTES; uploads have their own)",
    "409": "Conflicts with what is stored (taken meanwhile, or changed since you looked)",
    "422": "Invalid input; ``field`` or ``errors`` name what to correct",
}


def _error_response(status: str, existing: dict[str, Any] | None) -> dict[str, Any]:
    description = (existing or {}).get("description") or ERROR_DESCRIPTIONS.get(status, "Error")
    if description == "Validation Error":  # FastAPI's default wording for its own 422
        description = ERROR_DESCRIPTIONS["422"]
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}


def _document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(error_schema.pop("$defs", {}))
    components["ErrorOut"] = error_schema
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            statuses = {status for status in responses if status.startswith(("4", "5"))}
            if operation.get("security"):
                statuses |= {"401", "403"}
            if "{" in path:
                statuses.add("404")
            if method in WRITE_METHODS:
                statuses.add("409")
            if operation.get("requestBody"):
                statuses |= {"400", "413"}
            if operation.get("parameters") or operation.get("requestBody"):
                statuses.add("422")
            for status in sorted(statuses):
                if status.startswith("4"):
                    responses[status] = _error_response(status, responses.get(status))
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def install_openapi(app: FastAPI) -> None:
    """``app.openapi()`` with the error answers documented (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document_errors(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
