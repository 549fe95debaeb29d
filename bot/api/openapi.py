"""`/api/v1/openapi.json`, generated from the route table and its pydantic models.

Nothing here is written by hand per endpoint: paths, bodies, queries, answers and the
possible refusals all come from `bot.api.routes.ROUTES`, and the schemas from the
models that validate the requests, so the document says what the server enforces.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from bot.api import models
from bot.api.guard import SIGNED_HEADERS
from bot.api.routes import ROUTES, Route

VERSION = "1.0.0"
#: The statuses any signed route may answer besides its own.
SIGNED_REFUSALS = {401: "Not signed, or the signature, timestamp or nonce is refused.",
                   403: "Your member level does not include API access (now), or this.",
                   429: "Too many requests for this key: see Retry-After."}  # fmt: skip
REFUSALS = {
    400: "The body is not JSON.",
    404: "No such product, order or reservation of yours.",
    409: "Refused by the shop: out of stock, balance, price above max_total, a reused key.",
    422: "A field is missing or invalid.",
}
_REF = "#/components/schemas/{model}"


def _schemas() -> dict[str, Any]:
    """Every model's schema, shared definitions once, under components/schemas."""
    used: set[type[BaseModel]] = {models.ErrorBody}
    for route in ROUTES:
        used.add(route.answer)
        if route.body is not None:
            used.add(route.body)
    _, top = models_json_schema(
        [(model, "validation" if issubclass(model, models.Request) else "serialization")
         for model in sorted(used, key=lambda model: model.__name__)],
        ref_template=_REF,
    )  # fmt: skip
    return dict(top.get("$defs", {}))


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _parameters(route: Route) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True,
         "schema": {"type": "integer", "minimum": 1, "maximum": models.ID_MAX}}
        for name in route.ids
    ]  # fmt: skip
    if route.query is not None:
        schema = route.query.model_json_schema(ref_template=_REF)
        required = set(schema.get("required", ()))
        for name, prop in schema["properties"].items():
            parameters.append(
                {"name": name, "in": "query", "required": name in required, "schema": prop}
            )
    return parameters


def _operation(route: Route) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(status): _json(route.answer, "OK" if status == 200 else "Created")
        for status in (route.status, *route.also)
    }
    for status, why in sorted(
        {**SIGNED_REFUSALS, **{s: REFUSALS[s] for s in route.refusals}}.items()
    ):
        responses[str(status)] = _json(models.ErrorBody, why)
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": route.handler.__name__,
        "security": [{name: [] for name in SIGNED_HEADERS}],
        "responses": responses,
    }
    if route.capability:
        operation["description"] = f"Needs a member level with `{route.capability}`."
    parameters = _parameters(route)
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(route.body)}},
        }
    return operation


def document(server_url: str | None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route in `ROUTES`."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cardshop reseller API",
            "version": VERSION,
            "description": "Signed requests: see /api/v1/docs for the signature and examples."
            " Amounts are integers in 分 (1/100 of the currency).",
        },
        "servers": [{"url": server_url or "/"}],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                name: {"type": "apiKey", "in": "header", "name": name} for name in SIGNED_HEADERS
            },
        },
    }
