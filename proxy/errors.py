"""The gateway's one error type and its JSON body in the API's protocol.

Every refusal on the request path is a :class:`GatewayError`; the pipeline turns it
into a response in one place, so status, type, code and wording stay consistent and
no secret can slip into a message assembled somewhere else. OpenAI clients get
``{"error": {message, type, code}}``; Anthropic clients ``{"type": "error", "error":
{type, message}}``, the type following the status as Anthropic's does.
"""

from __future__ import annotations

import orjson

from .protocols.anthropic_to_openai import error_type as anthropic_error_type


class GatewayError(Exception):
    """A request the gateway answers itself: ``status`` plus OpenAI ``type``/``code``."""

    __slots__ = ("code", "headers", "message", "param", "status", "type")

    def __init__(
        self,
        status: int,
        type: str,
        code: str | None,
        message: str,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.message = message
        self.headers = headers
        #: The request field the error is about (OpenAI's ``param``), when there is one.
        self.param = param

    def body(self, protocol: str = "openai") -> bytes:
        if protocol == "anthropic":
            return anthropic_error_body(self.status, self.message)
        if self.param is not None:
            return orjson.dumps(
                {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}
            )
        return error_body(self.message, self.type, self.code)


def error_body(message: str, type: str, code: str | None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "code": code}})


def anthropic_error_body(status: int, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": anthropic_error_type(status), "message": message}})


def unsupported_parameter(param: str, message: str) -> GatewayError:
    return GatewayError(400, "invalid_request_error", "unsupported_parameter", message, param=param)


def bad_request(message: str, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, "invalid_request_error", code, message)


def unauthorized(message: str, code: str = "invalid_api_key") -> GatewayError:
    return GatewayError(401, "authentication_error", code, message)


def forbidden(message: str) -> GatewayError:
    return GatewayError(403, "permission_error", "not_authorized", message)


def not_found(message: str, code: str = "not_found") -> GatewayError:
    return GatewayError(404, "invalid_request_error", code, message)


def model_not_found(message: str) -> GatewayError:
    return GatewayError(404, "invalid_request_error", "model_not_found", message)


def method_not_allowed(method: str, path: str, allowed: str) -> GatewayError:
    return GatewayError(
        405,
        "invalid_request_error",
        "method_not_allowed",
        f"{method} is not allowed on {path}; use {allowed}",
        headers={"Allow": allowed},
    )


def too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        "invalid_request_error",
        "request_too_large",
        f"the request body is larger than {limit // (1024 * 1024)} MiB; send a smaller request",
    )


def rate_limited(
    message: str, retry_after: float, code: str = "rate_limit_exceeded", headers: dict[str, str] | None = None
) -> GatewayError:
    h = dict(headers or {})
    h["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    return GatewayError(429, "rate_limit_error", code, message, headers=h)


def service_unavailable(message: str, retry_after: float) -> GatewayError:
    return GatewayError(
        503, "api_error", "service_unavailable", message, headers={"Retry-After": str(max(1, int(retry_after + 0.999)))}
    )


def bad_gateway(message: str, code: str = "upstream_error") -> GatewayError:
    return GatewayError(502, "api_error", code, message)


def gateway_timeout(message: str) -> GatewayError:
    return GatewayError(504, "api_error", "upstream_timeout", message)


def internal_error() -> GatewayError:
    return GatewayError(
        500, "api_error", "internal_error", "the gateway failed to handle this request; see gateway.log"
    )


def cache_unavailable() -> GatewayError:
    """An admin clear that could not reach the Redis holding the response cache."""
    return GatewayError(
        503,
        "api_error",
        "cache_unavailable",
        "the gateway cannot reach the Redis that holds its response cache, so nothing was cleared; retry shortly",
        headers={"Retry-After": "1"},
    )


def limits_unavailable() -> GatewayError:
    return GatewayError(
        503,
        "api_error",
        "limits_unavailable",
        "the gateway cannot reach the Redis that holds its limits, and is set to refuse "
        'requests meanwhile (redis_failure = "refuse"); retry shortly',
        headers={"Retry-After": "1"},
    )
