"""OpenAPI 3.0 for the live endpoints (`GET /v0/pipes/openapi.json`), from their parameters.

Built from the registry's current snapshot on every call, so a reload shows at once.
"""

from __future__ import annotations

from typing import Any

from redpoll.endpoints.registry import Registry

__all__ = ("openapi_document",)


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


def openapi_document(registry: Registry, server_url: str = "") -> dict[str, Any]:
    """An OpenAPI 3.0 document for every live endpoint, from its parameters."""
    paths: dict[str, Any] = {}
    for ep in registry.snapshot.endpoints.values():
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
                    "404": {"description": "Unknown endpoint"},
                    "408": {"description": "Query timeout"},
                },
            }
        }
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "Redpoll endpoints", "version": str(registry.snapshot.version)},
        "paths": paths,
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
