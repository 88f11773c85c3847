"""What every admin route shares: the JSON error body and its middleware, the auth middleware, who is acting,
and strict JSON reading.

Errors are always ``{"error": {"code": "<slug>", "message": "<sentence>"}}`` with a fitting status; bad input
is a 4xx, never a 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from ..appkeys import CLOCK, CONFIG, SERVICE, STORE
from ..base.bodies import read_body
from ..base.errors import BadRequest, BlocklistError, Forbidden, Unauthorized, json_error
from ..blocklist.service import Actor, BlocklistService
from ..graph.classify import nested_deeper_than
from .auth import Principal, SharedAuthThrottle, TooManyAttempts, authenticate

log = logging.getLogger(__name__)

PRINCIPAL = web.RequestKey("admin_principal", Principal)
"""Who makes the request (a token's name or a person's e-mail address) and their role."""
THROTTLE = web.AppKey("admin_auth_throttle", SharedAuthThrottle)
"""Failed sign-ins per client address, counted in the store (in the process while it does not answer)."""
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
MAX_BODY = 64 * 1024
MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects accepted in a body (the API's own bodies are flat objects)."""
MAX_NUMBER_CHARS = 32
"""Longest JSON number literal accepted: a phone number has at most 15 digits; a longer one is refused before any
conversion, so a 5,000-digit integer costs nothing (and never hits Python's int/str conversion limit)."""


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error of the admin app in the admin error format."""
    try:
        return await handler(request)
    except Unauthorized as exc:
        return json_error(exc.status, exc.code, exc.message, {"WWW-Authenticate": 'Bearer realm="wa-blocklist"'})
    except TooManyAttempts as exc:
        return json_error(exc.status, exc.code, exc.message, {"Retry-After": str(exc.retry_after)})
    except BlocklistError as exc:
        return json_error(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _STATUS_CODES.get(exc.status, "http_error")
        missing = "no such admin API route" if request.path.startswith("/admin/api/") else "no such admin page"
        messages = {404: missing, 413: f"the request body is larger than {MAX_BODY} bytes"}
        return json_error(exc.status, code, messages.get(exc.status, exc.reason))
    except Exception:
        log.exception("admin API failure on %s %s", request.method, request.path)
        return json_error(500, "internal_error", "an internal error occurred; it has been logged")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Auth for every API route (a token or a person signed in by a trusted reverse proxy); only the ``admin`` role
    may change anything."""
    if request.path.startswith("/admin/api/") and request.path != "/admin/api/openapi.json":
        shared = request.config_dict
        now_ms = int(shared[CLOCK]() * 1000)  # wall clock: every replica counts on one time line
        admin = shared[CONFIG].current.admin
        who = await authenticate(request, admin, request.app[THROTTLE], shared.get(STORE), now_ms)
        if request.method not in _READ_METHODS and who.role != "admin":
            what = "the token" if who.kind == "token" else ""
            raise Forbidden(f"{what} {who.name!r} has the {who.role} role and cannot change blocks".strip())
        request[PRINCIPAL] = who
    return await handler(request)


def actor(request: web.Request, source: str = "admin_api") -> Actor:
    """The audit trail's "who" for a change made through this request."""
    return Actor(name=request[PRINCIPAL].name, source=source)


def path_connector(request: web.Request) -> tuple[BlocklistService, str]:
    """The service and the path's ``{pnid}``, checked before the body is read.

    Raises:
        UnknownConnector: no connector has this phone number ID (404).
    """
    service = request.config_dict[SERVICE]
    pnid = request.match_info["pnid"]
    service.connector(pnid)
    return service, pnid


def _number(kind: type[int] | type[float]) -> Any:
    def convert(text: str) -> int | float:
        if len(text) > MAX_NUMBER_CHARS:
            raise BadRequest(f"a number in the body is longer than {MAX_NUMBER_CHARS} characters; send it as a string")
        value = kind(text)
        if value in (float("inf"), float("-inf")):
            raise BadRequest("a number in the body is out of range")
        return value

    return convert


def _no_constant(text: str) -> Any:
    raise BadRequest(f"{text} is not valid JSON")


_DECODER = json.JSONDecoder(parse_int=_number(int), parse_float=_number(float), parse_constant=_no_constant)


def parse_json(raw: bytes) -> Any:
    """Decode a JSON body with the admin API's limits: nesting depth, number length, no NaN/Infinity.

    Raises:
        BadRequest: not UTF-8 JSON, nested deeper than :data:`MAX_JSON_DEPTH`, or a number longer than
            :data:`MAX_NUMBER_CHARS` characters.
    """
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise BadRequest("the request body is not valid JSON") from None
    # The decoder recurses once per level: the bound is checked first, on the brackets outside strings.
    if nested_deeper_than(text, MAX_JSON_DEPTH):
        raise BadRequest(f"the request body is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError:
        raise BadRequest("the request body is not valid JSON") from None


async def json_object(
    request: web.Request, allowed: frozenset[str], example: str = '{"number": "+57 300 123 4567"}'
) -> dict[str, Any]:
    """Read the request body as a JSON object with only ``allowed`` fields (``example`` shows the caller one).

    Raises:
        BadRequest: too large or slow (413/408 from :func:`read_body`), not JSON, not an object, unknown fields.
    """
    raw = await read_body(request, MAX_BODY, within=request.config_dict[CONFIG].current.server.body_timeout_seconds)
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object such as {example}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)[:200]} (allowed: {', '.join(sorted(allowed))})")
    return body


def body_number(body: dict[str, Any]) -> str:
    """The body's ``number``: a non-blank string, or a JSON whole number taken as its digits.

    Raises:
        BadRequest: missing, blank or of another type.
    """
    number = body.get("number")
    if isinstance(number, int) and not isinstance(number, bool):
        number = str(number)
    if not isinstance(number, str) or not number.strip():
        raise BadRequest('"number" is required: the phone number (with country code) or BSUID')
    return number
