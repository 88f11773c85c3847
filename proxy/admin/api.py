"""The admin JSON API (``/admin/api/``): connectors, block entries, checks, audit (auth and errors: :mod:`.http`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypedDict

from aiohttp import web

from ..appkeys import SERVICE
from ..base.errors import BadRequest
from ..blocklist.service import parse_expiry
from .http import PRINCIPAL, actor, body_number, json_object, path_connector
from .openapi import OPENAPI

_BODY_FIELDS = frozenset({"number", "reason", "duration", "expires_at"})

routes = web.RouteTableDef()


class _Page(TypedDict):
    limit: int
    cursor: str | None


def _page(request: web.Request, default_limit: int) -> _Page:
    """A listing's paging query parameters: ``limit`` (a whole number, ``default_limit`` when absent) and
    ``cursor`` (from the previous page's ``next_cursor``)."""
    raw = request.query.get("limit")
    try:
        limit = default_limit if raw is None or raw == "" else int(raw)
    except ValueError:
        raise BadRequest("limit must be a whole number") from None
    return {"limit": limit, "cursor": request.query.get("cursor") or None}


async def undo(request: web.Request, change: Callable[..., Awaitable[object]], reason: str) -> web.Response:
    """Undo a block or an opt-out: ``change(pnid, number, actor=, reason=)`` on the path's connector and number; 204."""
    await change(request.match_info["pnid"], request.match_info["number"], actor=actor(request), reason=reason)
    return web.Response(status=204)


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
    service, query = request.config_dict[SERVICE], request.query.get("q", "")
    entries, next_cursor = await service.list_blocks(request.match_info["pnid"], q=query, **_page(request, 50))
    return web.json_response({"blocks": [e.to_json() for e in entries], "next_cursor": next_cursor})


@routes.post("/api/connectors/{pnid}/blocks")
async def add_block(request: web.Request) -> web.Response:
    service, pnid = path_connector(request)
    body = await json_object(request, _BODY_FIELDS)
    number = body_number(body)
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
    return await undo(request, request.config_dict[SERVICE].unblock, request.query.get("reason", ""))


@routes.get("/api/connectors/{pnid}/check/{number}")
async def check_number(request: web.Request) -> web.Response:
    """Whether a number or BSUID is blocked, following wa_id↔BSUID links (what the gateway itself checks)."""
    matched = await request.config_dict[SERVICE].check(request.match_info["pnid"], request.match_info["number"])
    return web.json_response({"blocked": matched is not None, "matched": matched})


@routes.get("/api/connectors/{pnid}/messages/{message_id}/check")
async def check_message(request: web.Request) -> web.Response:
    """Whether the sender of an inbound message is blocked: what the gateway checks before a read receipt or a
    typing indicator (``known`` false: never seen in a verified webhook; the gateway's policy is included)."""
    service, pnid = path_connector(request)
    sender = await service.message_sender(pnid, request.match_info["message_id"])
    blocked = sender is not None and await service.first_blocked(pnid, [sender]) is not None
    policy = service.config.gateway.unknown_references
    return web.json_response({"known": sender is not None, "blocked": blocked, "unknown_references": policy})


@routes.get("/api/join_requests/{join_request_id}/check")
async def check_join_request(request: web.Request) -> web.Response:
    """Whether the user behind a group join request is blocked on any connector: what the gateway checks before
    an approval (``POST /{group_id}/join_requests``)."""
    service = request.config_dict[SERVICE]
    blocked = await service.join_request_blocked(request.match_info["join_request_id"])
    policy = service.config.gateway.unknown_references
    return web.json_response({"known": blocked is not None, "blocked": bool(blocked), "unknown_references": policy})


@routes.get("/api/connectors/{pnid}/audit")
async def audit_trail(request: web.Request) -> web.Response:
    records, next_cursor = await request.config_dict[SERVICE].audit(request.match_info["pnid"], **_page(request, 100))
    return web.json_response({"records": records, "next_cursor": next_cursor})


@routes.get("/api/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    """The OpenAPI 3 description of this API (public: it holds no data)."""
    return web.json_response(OPENAPI)
