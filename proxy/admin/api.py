"""The admin JSON API (``/admin/api/``): connectors, block entries, auth with roles (see :mod:`.auth`).

Errors are always ``{"error": {"code": "<slug>", "message": "<sentence>"}}`` with a fitting status; bad input
is a 4xx, never a 500.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from ..blocklist import Actor, parse_expiry
from ..bodies import read_body
from ..errors import BadRequest, BlocklistError, Forbidden, Unauthorized
from ..keys import CONFIG, SERVICE
from .auth import AuthThrottle, Principal, TooManyAttempts, authenticate
from .openapi import OPENAPI
from .page import setup_page

log = logging.getLogger(__name__)

PRINCIPAL = web.RequestKey("admin_principal", Principal)
"""Who makes the request (a token's name or a person's e-mail address) and their role."""
THROTTLE = web.AppKey("admin_auth_throttle", AuthThrottle)
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_BODY_FIELDS = frozenset({"number", "reason", "duration", "expires_at"})
_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
MAX_BODY = 64 * 1024
MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects accepted in a body (the API's own bodies are flat objects)."""
MAX_NUMBER_CHARS = 32
"""Longest JSON number literal accepted: a phone number has at most 15 digits; a longer one is refused before any
conversion, so a 5,000-digit integer costs nothing (and never hits Python's int/str conversion limit)."""

routes = web.RouteTableDef()


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(code, message), status=status, headers=headers)


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
        who = authenticate(request, request.config_dict[CONFIG].admin, request.app[THROTTLE])
        if request.method not in _READ_METHODS and who.role != "admin":
            what = "the token" if who.kind == "token" else ""
            raise Forbidden(f"{what} {who.name!r} has the {who.role} role and cannot change blocks".strip())
        request[PRINCIPAL] = who
    return await handler(request)


def actor(request: web.Request, source: str = "admin_api") -> Actor:
    """The audit trail's "who" for a change made through this request."""
    return Actor(name=request[PRINCIPAL].name, source=source)


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
    if _depth(text) > MAX_JSON_DEPTH:
        raise BadRequest(f"the request body is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError:
        raise BadRequest("the request body is not valid JSON") from None


_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _depth(text: str) -> int:
    """The deepest bracket nesting of a JSON text, strings skipped (an unterminated one ends the scan)."""
    if "[" not in text and "{" not in text:
        return 0
    depth = deepest = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        char = match.group()
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await read_body(request, MAX_BODY, within=request.config_dict[CONFIG].server.body_timeout_seconds)
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise BadRequest('the request body must be a JSON object such as {"number": "+57 300 123 4567"}')
    unknown = sorted(set(body) - _BODY_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(_BODY_FIELDS))
        raise BadRequest(f"unknown field(s): {', '.join(unknown)[:200]} (allowed: {allowed})")
    return body


def _int_param(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number") from None


@routes.get("/api/session")
async def session(request: web.Request) -> web.Response:
    """Who is signed in and what they may do (the admin page uses it to show or hide controls)."""
    who = request[PRINCIPAL]
    return web.json_response({"name": who.name, "role": who.role})


@routes.get("/api/connectors")
async def list_connectors(request: web.Request) -> web.Response:
    return web.json_response({"connectors": await request.config_dict[SERVICE].connectors()})


@routes.get("/api/connectors/{pnid}")
async def get_connector(request: web.Request) -> web.Response:
    service = request.config_dict[SERVICE]
    service.connector(request.match_info["pnid"])
    found = [c for c in await service.connectors() if c["phone_number_id"] == request.match_info["pnid"]]
    return web.json_response(found[0])


@routes.get("/api/connectors/{pnid}/blocks")
async def list_blocks(request: web.Request) -> web.Response:
    entries, next_cursor = await request.config_dict[SERVICE].list(
        request.match_info["pnid"],
        limit=_int_param(request, "limit", 50),
        cursor=request.query.get("cursor") or None,
        q=request.query.get("q", ""),
    )
    return web.json_response({"blocks": [e.to_json() for e in entries], "next_cursor": next_cursor})


@routes.post("/api/connectors/{pnid}/blocks")
async def add_block(request: web.Request) -> web.Response:
    service = request.config_dict[SERVICE]
    pnid = request.match_info["pnid"]
    service.connector(pnid)
    body = await _json_object(request)
    number = body.get("number")
    if isinstance(number, int) and not isinstance(number, bool):
        number = str(number)
    if not isinstance(number, str) or not number.strip():
        raise BadRequest('"number" is required: the phone number (with country code) or BSUID to block')
    expires_at_ms, duration_seconds = parse_expiry(duration=body.get("duration"), expires_at=body.get("expires_at"))
    entry, created = await service.block(
        pnid,
        number,
        actor=actor(request),
        reason=body.get("reason") or "",
        expires_at_ms=expires_at_ms,
        duration_seconds=duration_seconds,
    )
    location = request.app.router["block"].url_for(pnid=pnid, number=entry.number)
    return web.json_response(entry.to_json(), status=201 if created else 200, headers={"Location": str(location)})


@routes.get("/api/connectors/{pnid}/blocks/{number}", name="block")
async def get_block(request: web.Request) -> web.Response:
    entry = await request.config_dict[SERVICE].get(request.match_info["pnid"], request.match_info["number"])
    return web.json_response(entry.to_json())


@routes.delete("/api/connectors/{pnid}/blocks/{number}")
async def remove_block(request: web.Request) -> web.Response:
    await request.config_dict[SERVICE].unblock(
        request.match_info["pnid"],
        request.match_info["number"],
        actor=actor(request),
        reason=request.query.get("reason", ""),
    )
    return web.Response(status=204)


@routes.get("/api/connectors/{pnid}/check/{number}")
async def check_number(request: web.Request) -> web.Response:
    """Whether a number or BSUID is blocked, following wa_id↔BSUID links (what the gateway itself checks)."""
    matched = await request.config_dict[SERVICE].check(request.match_info["pnid"], request.match_info["number"])
    return web.json_response({"blocked": matched is not None, "matched": matched})


@routes.get("/api/connectors/{pnid}/messages/{message_id}/check")
async def check_message(request: web.Request) -> web.Response:
    """Whether the sender of an inbound message is blocked: what the gateway checks before a read receipt or a
    typing indicator (``known`` false: never seen in a verified webhook; the gateway's policy is included)."""
    service = request.config_dict[SERVICE]
    pnid = request.match_info["pnid"]
    service.connector(pnid)
    sender = await service.message_sender(pnid, request.match_info["message_id"])
    blocked = sender is not None and await service.first_blocked(pnid, [sender]) is not None
    policy = service.config.gateway.unknown_references
    return web.json_response({"known": sender is not None, "blocked": blocked, "unknown_references": policy})


@routes.get("/api/join_requests/{join_request_id}/check")
async def check_join_request(request: web.Request) -> web.Response:
    """Whether the user behind a group join request is blocked on any connector: what the gateway checks before
    an approval (``POST /{group_id}/join_requests``)."""
    service = request.config_dict[SERVICE]
    connectors = [c.phone_number_id for c in service.config.connectors]
    users = [
        who
        for pnid in connectors
        if (who := await service.join_request_user(pnid, request.match_info["join_request_id"])) is not None
    ]
    blocked = False
    for pnid in connectors if users else ():
        if await service.first_blocked(pnid, users) is not None:
            blocked = True
            break
    policy = service.config.gateway.unknown_references
    return web.json_response({"known": bool(users), "blocked": blocked, "unknown_references": policy})


@routes.get("/api/connectors/{pnid}/audit")
async def audit_trail(request: web.Request) -> web.Response:
    records, next_cursor = await request.config_dict[SERVICE].audit(
        request.match_info["pnid"],
        limit=_int_param(request, "limit", 100),
        cursor=request.query.get("cursor") or None,
    )
    return web.json_response({"records": records, "next_cursor": next_cursor})


@routes.get("/api/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    """The OpenAPI 3 description of this API (public: it holds no data)."""
    return web.json_response(OPENAPI)


def create_admin_app() -> web.Application:
    """The admin sub-application, mounted at ``/admin/``."""
    app = web.Application(middlewares=[error_middleware, auth_middleware])
    app[THROTTLE] = AuthThrottle()
    from .bulk import routes as bulk_routes  # imported here: it uses this module's helpers
    from .changes import routes as change_routes  # PATCH a block, restore an export
    from .everywhere import routes as everywhere_routes  # block on every connector, opt-outs (issue 19)

    app.add_routes(bulk_routes)
    app.add_routes(change_routes)
    app.add_routes(everywhere_routes)
    app.add_routes(routes)
    setup_page(app)
    app.on_response_prepare.append(_no_sniffing)
    return app


async def _no_sniffing(request: web.Request, response: web.StreamResponse) -> None:
    # API answers echo user text (numbers, reasons) in JSON: a browser must never render them as anything else.
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
