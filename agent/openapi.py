"""The ingest API as an OpenAPI 3.1 document, generated from the record models.

Served at ``GET /v1/openapi.json`` so an integrator's tools can generate a
till's client; built from the same pydantic models that validate, so the
document cannot drift from the rules (the rules it cannot express, such as
the money rule, are in docs/ingest-api.md).
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic.json_schema import models_json_schema

from agent.records import Sale, StockMovement, ZReport

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{model}"


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {"application/json": {"schema": schema}}
    return out


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The document (built once; the models do not change while the agent runs)."""
    _, schema = models_json_schema(
        [(Sale, "validation"), (StockMovement, "validation"), (ZReport, "validation")], ref_template=_REF
    )
    components: dict[str, Any] = dict(schema["$defs"])
    components["Stored"] = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "key": {"type": "string"},
            "seq": {"type": "integer"},
            "duplicate": {"type": "boolean"},
        },
        "required": ["id", "key", "seq", "duplicate"],
    }
    components["Validation"] = {
        "type": "object",
        "properties": {
            "error": {"const": "validation"},
            "details": {
                "type": "array",
                "maxItems": 100,
                "items": {
                    "type": "object",
                    "properties": {"loc": {"type": "array"}, "msg": {"type": "string"}},
                    "required": ["loc", "msg"],
                },
            },
        },
        "required": ["error", "details"],
    }
    components["Batch"] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "sales": {"type": "array", "items": {"$ref": _REF.format(model="Sale")}},
            "stock_movements": {"type": "array", "items": {"$ref": _REF.format(model="StockMovement")}},
            "z_reports": {"type": "array", "items": {"$ref": _REF.format(model="ZReport")}},
        },
    }
    error = {"type": "object", "properties": {"error": {"type": "string"}, "message": {"type": "string"}}}
    stored = {"$ref": _REF.format(model="Stored")}
    answers = {
        "401": _answer("missing or wrong token", error),
        "403": _answer("a per-till token sending another till's record", error),
        "409": _answer("same key, different content; nothing overwritten", error),
        "413": _answer("body over 1 MiB", error),
        "415": _answer("not application/json", error),
        "422": _answer("invalid record; nothing stored", {"$ref": _REF.format(model="Validation")}),
        "503": _answer("shutting down, or the outbox cannot be opened; retry later", error),
        "507": _answer("the disk or the outbox size limit is full; nothing stored", error),
    }

    def post(model: str, ok: dict[str, Any]) -> dict[str, Any]:
        return {
            "post": {
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": _REF.format(model=model)}}},
                },
                "responses": {"201": _answer("stored", ok), "200": _answer("already stored", ok), **answers},
            }
        }

    batch_ok = {"type": "object", "properties": {"records": {"type": "array", "items": stored}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Kassabro ingest API", "version": "1"},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/v1/sales": post("Sale", stored),
            "/v1/stock-movements": post("StockMovement", stored),
            "/v1/z-reports": post("ZReport", stored),
            "/v1/batch": post("Batch", batch_ok),
            "/v1/records/{key}": {
                "get": {
                    "parameters": [{"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": _answer("the stored record and its delivery state", {"type": "object"}),
                        "404": _answer("no record has that key", error),
                    },
                }
            },
        },
    }
