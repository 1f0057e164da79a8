"""The OpenAPI document `/openapi.json` serves: FastAPI's, with the answers the app really gives.

FastAPI documents a 422 validation answer on every operation with a body or parameters; this app
answers 400 instead (its one validation handler), and every error leaves through one handler per
service: IoT Hub's shape on hub paths, `{"success": false, "error", "code", "field"}` on the
studio's. `document_answers` states that in the document: the error statuses each service
answers with their body schema, the security scheme each path takes, and no 422. A client
generated from the document, or a fuzzer checking answers against it (tests/integration/
test_openapi_fuzz.py), then sees what the service does.
"""
from __future__ import annotations

from typing import Any

from helpers.localcloud.hub.errors import is_hub_path

SECURITY_SCHEMES = {
    "hubSas": {"type": "apiKey", "in": "header", "name": "Authorization",
               "description": "SharedAccessSignature sr=...&sig=...&se=...[&skn=iothubowner]"},
    "studioKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
}
_NULLABLE_TEXT = {"anyOf": [{"type": "string"}, {"type": "null"}]}
HUB_ERROR = {
    "title": "HubError", "type": "object", "required": ["Message", "ExceptionMessage"],
    "description": "IoT Hub's error body (the service SDK raises HttpOperationError from it); `iothub-errorcode` header",
    "properties": {"Message": {"type": "string", "description": "ErrorCode:<Code>;<what is wrong and how to fix it>"},
                   "ExceptionMessage": {"type": "string"}, "error": {"type": "string"}, "code": {"type": "string"},
                   "field": _NULLABLE_TEXT, "errorCode": {"type": "integer"}},
}
STUDIO_ERROR = {
    "title": "StudioError", "type": "object", "required": ["success", "error"],
    "properties": {"success": {"type": "boolean", "const": False}, "error": {"type": "string"},
                   "code": _NULLABLE_TEXT, "field": _NULLABLE_TEXT},
}
_COMMON = {
    400: "malformed request: a field's type or value, JSON too deep or not finite (the message names it)",
    401: "no credential, or a wrong one",
    403: "the credential may not make this call",
    404: "no such resource",
    409: "the resource exists already, or conflicts with another",
    413: "the body (or a document in it) is over a size limit (the message names it)",
}
HUB_ANSWERS = {**_COMMON, 412: "If-Match does not match the resource's etag",
               429: "over the hub's request rate (Retry-After says when to retry)"}
STUDIO_ANSWERS = _COMMON
#: direct methods: IoT Hub's own answer when the device does not answer in time
METHOD_ANSWERS = {504: "the device did not answer the direct method in time (GatewayTimeout, error code 504101)"}


def _error(description: str, ref: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def document_answers(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` (FastAPI's document, changed in place and returned) with the error answers and security this app has."""
    components = schema.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    schemas = components.setdefault("schemas", {})
    schemas["HubError"], schemas["StudioError"] = HUB_ERROR, STUDIO_ERROR
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body, never sent by this app
        schemas.pop(unused, None)
    for path, operations in schema.get("paths", {}).items():
        hub = is_hub_path(path) or path.startswith("/api/hub/")
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            responses.pop("422", None)
            answers = dict(HUB_ANSWERS if hub else STUDIO_ANSWERS)
            if path.endswith("/methods"):
                answers.update(METHOD_ANSWERS)
            for status, text in answers.items():
                responses.setdefault(str(status), _error(text, "HubError" if is_hub_path(path) else "StudioError"))
            if path == "/api/health":
                operation["security"] = [{"hubSas": []}, {"studioKey": []}]
            else:
                operation["security"] = [{"hubSas": []}] if hub else [{"studioKey": []}]
    return schema


__all__ = ["document_answers", "HUB_ERROR", "STUDIO_ERROR", "SECURITY_SCHEMES"]
