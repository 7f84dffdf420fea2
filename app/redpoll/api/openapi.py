"""OpenAPI 3.0 for the live endpoints (`GET /v0/pipes/openapi.json`), from their parameters.

Built from the registry's current snapshot on every call, so a reload shows at once.
`openapi_config` configures Litestar's own schema of the routes (`/schema/openapi.json`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Response, Router
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, YamlRenderPlugin

from redpoll import __version__
from redpoll.api.auth import admin_guard
from redpoll.api.errors import error_response
from redpoll.endpoints.registry import Registry

__all__ = ("openapi_config", "openapi_document")


_OPENAPI_TYPES = {
    "String": {"type": "string"},
    "Boolean": {"type": "boolean"},
    "Float32": {"type": "number", "format": "float"},
    "Float64": {"type": "number", "format": "double"},
    "Date": {"type": "string", "format": "date"},
    "DateTime": {"type": "string", "format": "date-time"},
    "DateTime64": {"type": "string", "format": "date-time"},
}


def _schema(type_name: str) -> dict[str, Any]:
    if type_name.startswith("Array("):
        inner = _schema(type_name[6:-1])
        return {"type": "array", "items": inner}
    if "Int" in type_name:
        return {"type": "integer", "format": type_name.lower()}
    return dict(_OPENAPI_TYPES.get(type_name, {"type": "string"}))


def openapi_document(
    registry: Registry, server_url: str = "", only: Callable[[str], bool] | None = None
) -> dict[str, Any]:
    """An OpenAPI 3.0 document for every live endpoint (those `only` accepts), from its
    parameters, with the bearer-token scheme every call needs."""
    paths: dict[str, Any] = {}
    for ep in registry.snapshot.endpoints.values():
        if only is not None and not only(ep.name):
            continue
        parameters = []
        for p in ep.params:
            schema = _schema(p.type)
            target = schema["items"] if schema["type"] == "array" else schema
            for key, value in (
                ("default", p.default),
                ("enum", p.enum),
                ("minimum", p.min),
                ("maximum", p.max),
            ):
                if value is not None:
                    (schema if key == "default" else target)[key] = (
                        list(value) if key == "enum" else value
                    )
            param: dict[str, Any] = {
                "name": p.name,
                "in": "query",
                "required": p.required,
                "schema": schema,
            }
            if p.description:
                param["description"] = p.description
            if p.example is not None:
                param["example"] = p.example
            if schema["type"] == "array":
                param["style"], param["explode"] = "form", False
            parameters.append(param)
        paths[f"/v0/pipes/{ep.name}.json"] = {
            "get": {
                "summary": ep.meta.description or ep.name,
                "operationId": ep.name,
                "tags": list(ep.meta.tags),
                "parameters": parameters,
                "responses": {
                    "200": {"description": "ClickHouse FORMAT JSON result"},
                    "400": {"description": "Invalid parameter"},
                    "403": {"description": "Missing token, or the token lacks the scope"},
                    "404": {"description": "Unknown endpoint"},
                    "408": {"description": "Query timeout"},
                },
            }
        }
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "Redpoll endpoints", "version": str(registry.snapshot.version)},
        "paths": paths,
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


def _not_found_as_json(response: Response[Any]) -> Response[Any]:
    """Litestar answers unknown /schema paths with an HTML page; ours is the envelope."""
    if response.status_code == 404:
        return error_response(404, "not found")
    return response


def openapi_config() -> OpenAPIConfig:
    """Litestar's OpenAPI for the admin token: `/schema/openapi.json` and `.yaml` only.

    No HTML UI (they load JavaScript from a public CDN) and no `/schema` root: Litestar
    serves its first render plugin there, so `default_plugin` is cleared after init."""
    router = Router(
        "/schema",
        route_handlers=[],
        guards=[admin_guard],
        include_in_schema=False,
        after_request=_not_found_as_json,
    )
    config = OpenAPIConfig(
        title="Redpoll",
        version=__version__,
        render_plugins=[JsonRenderPlugin(), YamlRenderPlugin(path="/openapi.yaml")],
        openapi_router=router,
    )
    config.default_plugin = None
    return config
