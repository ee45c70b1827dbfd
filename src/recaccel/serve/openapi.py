"""The OpenAPI document as the contract: every body the server reads, every status and media
type it answers.

The hot routes check their bodies by hand (rank.py, protocol/) rather than through pydantic,
so the models here only document them; tests hold the two to the same bodies, and a fuzzer
(Schemathesis, tests/e2e/test_contract.py) holds the server to the whole document. What a
schema cannot say is stated in the descriptions: an OIP tensor's `data` must hold
prod(`shape`) values and name one of the model's inputs, so a body valid by the schema can
still be refused 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from recaccel.serve.protocol import DATATYPES, HEADER_LENGTH

_ERROR_EXAMPLE = {"error": "what is wrong, and a hint"}
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "a malformed request: the error names the field (a load: an artifact that cannot be "
    "loaded, and why)",
    401: "a missing or wrong bearer token",
    403: "model management is off on this server",
    404: "an unknown model or version (or, for /v1/rank, user or item)",
    409: "refused in the server's present state (unloading its only model)",
    413: "a body or candidate list over the server's limits",
    429: "refused now, to be answered in time: see Retry-After",
    503: "draining, starting, or the model or the feature store cannot serve now (the "
    'body\'s "reason" says which, e.g. "feature_store")',
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` entries for error statuses: a JSON `{"error": ...}` body each."""
    return {
        code: {
            "description": ERROR_DESCRIPTIONS[code],
            "content": {"application/json": {"example": _ERROR_EXAMPLE}},
        }
        for code in codes
    }


def no_body(description: str) -> dict[str, Any]:
    return {"description": description, "content": {}}


HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: no_body("yes (no body)"),
    503: no_body("not yet, or no longer (no body)"),
}
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class OipTensor(BaseModel):
    """One input tensor of an Open Inference Protocol (KServe v2) request, JSON form."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="one of the model's inputs (its metadata lists them)")
    shape: list[int] = Field(min_length=1, description="dimensions; rows first")
    datatype: Literal[tuple(DATATYPES)] = Field(  # type: ignore[valid-type]
        description="the tensor's element type, as the model's metadata gives it"
    )
    data: list[Any] = Field(
        description="prod(shape) values, flat or nested; absent with binary_data_size"
    )
    parameters: dict[str, Any] | None = Field(
        default=None, description="binary_data_size: the tensor's bytes follow the JSON"
    )


class OipOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="an output of the model (`score`)")
    parameters: dict[str, Any] | None = Field(default=None, description="binary_data: bool")


class OipRequest(BaseModel):
    """The body of an OIP infer request (protocol.parse_infer_request checks it). Triton's
    binary extension also accepted: the JSON, then the tensors' bytes, with the JSON's length
    in the `Inference-Header-Content-Length` header."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, description="echoed in the answer")
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="timeout (µs), priority, binary_data_output (bool)",
    )
    inputs: list[OipTensor] = Field(min_length=1)
    outputs: list[OipOutput] | None = None


class LoadParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    artifact: str = Field(description="the artifact directory, as the server sees it")
    version: str | None = Field(default=None, description="default: the next number")


class LoadRequest(BaseModel):
    """The body of a model load (or hot swap): Triton's repository extension's shape."""

    parameters: LoadParameters


def json_body(model: type[BaseModel], description: str | None = None) -> dict[str, Any]:
    """`openapi_extra` for a route whose JSON body `model` documents (`finish` adds the model
    to the document's components)."""
    body: dict[str, Any] = {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
        },
    }
    if description is not None:
        body["description"] = description
    return {"requestBody": body}


INFER_BODY = json_body(OipRequest, f"JSON; or JSON then tensor bytes, with {HEADER_LENGTH} set")
LOAD_BODY = json_body(LoadRequest)
# The bodies the routes check by hand: their models, and the models within them ($defs).
BODY_MODELS = (OipRequest, LoadRequest)


def raw_features_schema(raw: Mapping[str, Any]) -> dict[str, Any]:
    """RankRequest's `features` as this server's feature store takes them: the raw values it
    names, each by its schema, nothing else (a store that takes none: an empty object)."""
    return {
        "anyOf": [
            {"type": "object", "properties": dict(raw), "additionalProperties": False},
            {"type": "null"},
        ],
        "default": None,
        "title": "Features",
        "description": "raw values in place of the stored ones: the user's (so a user the "
        "store does not know can be ranked) and the request's time"
        if raw
        else "this server's feature store takes no raw values",
    }


def finish(schema: dict[str, Any], raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """FastAPI's document, made true to the server: no 422 anywhere (FastAPI validates no
    body here; the server answers 400 and says why), the models only the hand-checked
    routes use added to the components, and /v1/rank's `features` as the feature store
    takes them (`raw`: its `raw_schema`; None: no store, left open)."""
    for operations in schema["paths"].values():
        for operation in operations.values():
            operation["responses"].pop("422", None)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    for model in BODY_MODELS:
        definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, nested in definition.pop("$defs", {}).items():
            components[name] = nested
        components[model.__name__] = definition
    if raw is not None and "RankRequest" in components:
        components["RankRequest"]["properties"]["features"] = raw_features_schema(raw)
    return schema
