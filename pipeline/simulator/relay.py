"""What the relay itself answers, before and around the upstream: its key check, its
channels per model, its body limit and its own error shape.

Copied from new-api (QuantumNous/new-api, read at SolveaCX/new-api c8c492a):
- middleware/auth.go TokenAuth: the key is the Authorization header without
  `Bearer ` (or `bearer `), then without `sk-`, then up to the first `-` (what
  follows picks a channel); an empty or unknown token is 401 "Token not provided"
  / "Invalid token" with type new_api_error and an empty code
  (tokenAuthErrorResponse, middleware/utils.go abortWithOpenAiMessage).
- common/init.go MAX_REQUEST_BODY_MB (128) and common/gin.go: a larger body is 413
  read_request_body_failed "request body exceeds 128 MB" (controller/relay.go).
- middleware/distributor.go: a model no channel serves is 503 model_not_found
  "No available channel for model M under group default (distributor)".
- types/error.go NewError / ToOpenAIError: the relay's own errors are
  `{"error": {"message", "type": "new_api_error", "param": "", "code"}}`, and
  controller/relay.go appends " (request id: ...)" to every message it answers.
- router/relay-router.go: unknown paths under /v1 are 404 "Invalid URL (POST /v1/...)"
  (controller.RelayNotFound); endpoints the relay lists but does not implement are
  501 api_not_implemented "API not implemented" (controller.RelayNotImplemented).

It must never keep the key it is given beyond comparing it, nor import the product.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from aiohttp import web

from pipeline.simulator.faults import error_response

MAX_BODY_MB = 128
MAX_BODY_BYTES = MAX_BODY_MB * 1024 * 1024

# Channel type of each model the simulator's relay serves: the adaptor that handles it.
CHANNELS = {
    "gpt-image-1": "openai", "gpt-image-1-mini": "openai", "gpt-image-1.5": "openai",
    "gpt-image-2": "openai", "chatgpt-image-latest": "openai", "dall-e-2": "openai",
    "gemini-2.5-flash-image": "gemini", "gemini-3-pro-image-preview": "gemini",
    "gemini-3.1-flash-image": "gemini", "jimeng-4.0": "jimeng",
}


def request_id() -> str:
    return secrets.token_hex(16)


def token(header: str) -> str:
    """The token the relay looks up for an Authorization header (middleware/auth.go)."""
    key = header
    if key.startswith(("Bearer ", "bearer ")):
        key = key[7:].strip()
    return key.removeprefix("sk-").split("-")[0]


class RelayError(Exception):
    """An answer of the relay itself, in its own error shape."""

    def __init__(self, status: int, message: str, code: str = "",
                 headers: Mapping[str, str] | None = None, type: str = "new_api_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.type = status, message, code, type
        self.headers = headers

    def response(self) -> web.Response:
        return error_response(self.status, f"{self.message} (request id: {request_id()})",
                              type=self.type, code=self.code, param="", headers=self.headers)


def check_key(header: str, accepted: str) -> None:
    """401 unless the header names the accepted token, compared as the relay does."""
    given = token(header)
    if not given:
        raise RelayError(401, "Token not provided")
    if not secrets.compare_digest(given, token(accepted)):
        raise RelayError(401, "Invalid token")


def channel(model: str) -> str:
    """The channel type serving `model`, or 503 model_not_found."""
    if model not in CHANNELS:
        raise RelayError(503, f"No available channel for model {model} under group default "
                         "(distributor)", code="model_not_found")
    return CHANNELS[model]


def too_large() -> RelayError:
    return RelayError(413, f"request body exceeds {MAX_BODY_MB} MB",
                      code="read_request_body_failed")


def not_implemented() -> RelayError:
    return RelayError(501, "API not implemented", code="api_not_implemented")


def convert_failed(reason: str) -> RelayError:
    """relay/image_handler.go and gemini_handler.go: an adaptor that cannot convert the
    request is a 500 convert_request_failed, the same on every attempt."""
    return RelayError(500, reason, code="convert_request_failed")
