"""The OpenAPI 3.1 document of the server (`GET /openapi.json`). Pure.

Request bodies come from the models in models.py and responses.py, so the document says
exactly what the server checks; responses are described briefly (their
shapes are the OpenAI and Anthropic APIs' own), errors in full.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from ... import __version__
from . import models as schemas
from .responses import ResponsesRequest


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """The error body of the OpenAI-shaped endpoints; `param` names the bad field."""

    error: OpenAIErrorDetail


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    """The error body of /v1/messages and /v1/messages/count_tokens."""

    type: Literal["error"]
    error: AnthropicErrorDetail


# path, request model, error model, summary, streams
_POSTS: tuple[tuple[str, type[BaseModel], type[BaseModel], str, bool], ...] = (
    (
        "/v1/chat/completions",
        schemas.ChatCompletionRequest,
        OpenAIError,
        "OpenAI chat completions",
        True,
    ),
    ("/v1/messages", schemas.AnthropicMessagesRequest, AnthropicError, "Anthropic Messages", True),
    (
        "/v1/messages/count_tokens",
        schemas.AnthropicCountTokensRequest,
        AnthropicError,
        "Anthropic token count of a Messages request",
        False,
    ),
    ("/v1/responses", ResponsesRequest, OpenAIError, "OpenAI Responses (stateless)", True),
)
_GETS = (  # path, summary
    ("/v1/models", "The served model, as an OpenAI model list"),
    ("/v1/models/{model}", "One model card; 404 for a model this server does not serve"),
    ("/health", "200 when ready; 503 while loading, stopping or when the engine has stopped"),
    ("/status", "What the server is doing: model, context, cache, requests"),
    ("/metrics", "Prometheus metrics (text format)"),
)
_ERRORS = {
    "400": "Invalid request: the message names the field, `param` (OpenAI) its path",
    "401": "Missing or wrong API key",
    "404": "Unknown path or model",
    "413": "Request body too large",
    "429": "Too many requests waiting",
    "500": "Internal error",
    "503": "Model loading, server stopping or engine unavailable",
}


class _Schemas(GenerateJsonSchema):
    """Tagged unions as anyOf: a text part also fits the catch-all branch,
    which JSON Schema's oneOf would count as a failure."""

    def tagged_union_schema(self, schema):
        out = super().tagged_union_schema(schema)
        if "oneOf" in out:
            out["anyOf"] = out.pop("oneOf")
        return out


def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _post(model, error, summary: str, streams: bool) -> dict:
    ok = {"application/json": {"schema": {"type": "object"}}}
    if streams:
        ok["text/event-stream"] = {"schema": {"type": "string"}}
    errors = {
        code: {"description": text, "content": {"application/json": {"schema": _ref(error)}}}
        for code, text in _ERRORS.items()
    }
    return {
        "post": {
            "summary": summary,
            "description": model.__doc__ or summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(model)}},
            },
            "responses": {
                "200": {
                    "description": "OK (server-sent events when `stream` is true)"
                    if streams
                    else "OK",
                    "content": ok,
                },
                **errors,
            },
        }
    }


def _get(path: str, summary: str) -> dict:
    kind = "text/plain" if path == "/metrics" else "application/json"
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {
                "description": "OK",
                "content": {
                    kind: {"schema": {"type": "string" if kind == "text/plain" else "object"}}
                },
            }
        },
    }
    if "{model}" in path:
        op["parameters"] = [
            {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
        ]
    return {"get": op}


def document() -> dict:
    """The whole document, built from the models each time (cheap: a few ms)."""
    models = [m for _, m, _, _, _ in _POSTS] + [OpenAIError, AnthropicError]
    _, defs = models_json_schema(
        [(m, "validation") for m in models],
        schema_generator=_Schemas,
        ref_template="#/components/schemas/{model}",
    )
    paths = {
        path: _post(model, error, summary, streams)
        for path, model, error, summary, streams in _POSTS
    }
    paths.update({path: _get(path, summary) for path, summary in _GETS})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mlx-native-server",
            "version": __version__,
            "description": "A local OpenAI- and Anthropic-compatible endpoint for one MLX model. "
            "Unknown request fields are accepted and ignored.",
        },
        "paths": paths,
        "security": [{}, {"bearer": []}, {"apiKey": []}],  # a key only when the server has one
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }
