"""Answers to browsers calling from another origin: opt-in per model API (``cors_origins``).

An API with an empty ``cors_origins`` answers no CORS at all, so a browser page elsewhere
cannot read its answers. With origins listed (``*`` = any):

* a preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) from an
  allowed origin is answered 204 without a key: the origin (or ``*``), the route's
  methods, the headers the browser asked for, and how long it may cache the answer;
* a preflight from any other origin is refused 403 ``cors_origin_not_allowed`` with no
  CORS header (the browser then blocks the call; the body says what to change);
* every answer to an allowed origin — success or error, 401 and 429 included — says
  ``Access-Control-Allow-Origin`` and exposes the headers a client reads (request id,
  rate limits, ``Retry-After``).

Pure functions of the compiled route and the request headers, so the pipeline only
hooks them in.
"""

from __future__ import annotations

import re

from .errors import GatewayError, method_not_allowed
from .routes import Route

#: How long a browser may reuse a preflight answer (seconds; browsers cap it lower).
MAX_AGE_S = 600
#: Response headers a page's script may read besides the CORS-safelisted ones.
EXPOSED = (
    b"x-request-id, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests, "
    b"x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens, retry-after, x-cache"
)
#: What ``Access-Control-Request-Headers`` may hold to be echoed: header names and commas.
_HEADER_LIST_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~, -]{0,1024}$")
_VARY = b"vary: Origin\r\n"


def allow_origin(route: Route, origin: str | None) -> str | None:
    """The ``Access-Control-Allow-Origin`` value for ``origin`` on ``route``, or ``None``."""
    allowed = route.cors_origins
    if not origin or not allowed:
        return None
    if origin.lower() in allowed:
        return origin
    return "*" if "*" in allowed else None


def answer_headers(route: Route, headers: dict[str, str]) -> bytes:
    """Header lines every answer on ``route`` carries for this request's ``Origin``."""
    if not route.cors_origins:
        return b""
    allow = allow_origin(route, headers.get("origin"))
    # An answer that names the origin differs by origin: caches must key on it.
    vary = b"" if route.cors_origins == {"*"} else _VARY
    if allow is None:
        return vary
    return b"access-control-allow-origin: %b\r\naccess-control-expose-headers: %b\r\n%b" % (
        allow.encode(),
        EXPOSED,
        vary,
    )


def preflight(route: Route, path: str, headers: dict[str, str]) -> bytes:
    """The head of the 204 answer to a browser's preflight for ``route``; raises if refused."""
    methods = "GET, HEAD" if route.models_list else "POST"
    origin = headers.get("origin")
    if not origin or not headers.get("access-control-request-method"):
        raise method_not_allowed("OPTIONS", path, "GET" if route.models_list else "POST")
    allow = allow_origin(route, origin)
    if allow is None:
        apis = ", ".join(repr(a.name) for a in route.apis or (route.api,))
        fix = (
            "add it to the cors_origins of model API " + apis
            if route.cors_origins
            else "set cors_origins on model API " + apis
        )
        raise GatewayError(
            403,
            "permission_error",
            "cors_origin_not_allowed",
            f"origin {origin!r} may not call {path} from a browser; {fix}",
        )
    lines = [
        b"access-control-allow-origin: %b\r\n" % allow.encode(),
        b"access-control-allow-methods: %b\r\n" % methods.encode(),
        b"access-control-max-age: %d\r\n" % MAX_AGE_S,
        b"vary: Origin, Access-Control-Request-Method, Access-Control-Request-Headers\r\n",
    ]
    asked = headers.get("access-control-request-headers", "").strip()
    if asked and _HEADER_LIST_RE.match(asked):
        lines.append(b"access-control-allow-headers: %b\r\n" % asked.encode())
    return b"".join(lines)
