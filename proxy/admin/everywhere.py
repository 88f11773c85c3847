"""Admin API routes of issue 19: a block on several or all connectors at once, and opt-outs.

- ``POST /api/everywhere/blocks`` ``{"number", "reason", "duration" | "expires_at", "connectors": [pnid...],
  "include_unsynced"}``: block on the listed connectors (all when ``connectors`` is left out); 200 with one outcome
  per connector (the 24-hour rule is applied per connector, see
  :meth:`wa_blocklist.proxy.blocklist.service.BlocklistService.block_everywhere`).
- ``DELETE /api/everywhere/blocks/{number}?reason=&connectors=a,b``: unblock on the listed (or all) connectors.
- ``GET /api/everywhere/blocks/{number}``: on which connectors the number is blocked.
- ``GET/POST /api/connectors/{pnid}/optouts``, ``GET/DELETE /api/connectors/{pnid}/optouts/{number}``: opt-outs (the
  ``GET`` of one number is what the plugins' HTTP mode checks before a template send).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..appkeys import SERVICE
from ..base.errors import BadRequest
from ..blocklist.service import MAX_REASON, NotOptedOut, parse_expiry
from .api import undo
from .http import actor, body_number, json_object, path_connector

routes = web.RouteTableDef()

_EVERYWHERE_FIELDS = frozenset({"number", "reason", "duration", "expires_at", "connectors", "include_unsynced"})
_OPTOUT_FIELDS = frozenset({"number", "reason"})
MAX_CONNECTORS = 1000


def _reason(value: Any) -> str:
    if value is not None and not isinstance(value, str):
        raise BadRequest('"reason" must be a string')
    if value and len(value) > MAX_REASON:  # as sent, before spaces are folded: what the OpenAPI document says
        raise BadRequest(f"reason is too long ({len(value)} characters, at most {MAX_REASON})")
    return value or ""


def _connectors(value: Any) -> list[str] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) > MAX_CONNECTORS
        or not all(isinstance(p, str) and p.strip() for p in value)
    ):
        raise BadRequest('"connectors" must be a list of phone number IDs (leave it out for all connectors)')
    return [p.strip() for p in value]


@routes.post("/api/everywhere/blocks")
async def block_everywhere(request: web.Request) -> web.Response:
    """Block one number on several or all connectors; 200 with one outcome per connector."""
    body = await json_object(request, _EVERYWHERE_FIELDS)
    include = body.get("include_unsynced", False)
    if not isinstance(include, bool):
        raise BadRequest('"include_unsynced" must be true or false')
    expires_at_ms, duration_seconds = parse_expiry(duration=body.get("duration"), expires_at=body.get("expires_at"))
    outcomes = await request.config_dict[SERVICE].block_everywhere(
        body_number(body),
        actor=actor(request),
        reason=_reason(body.get("reason")),
        pnids=_connectors(body.get("connectors")),
        expires_at_ms=expires_at_ms,
        duration_seconds=duration_seconds,
        include_unsynced=include,
    )
    return web.json_response({"results": [o.to_json() for o in outcomes]})


@routes.delete("/api/everywhere/blocks/{number}")
async def unblock_everywhere(request: web.Request) -> web.Response:
    """Unblock one number on the connectors in ``?connectors=a,b`` (all when absent); 200 with the outcomes."""
    listed = request.query.get("connectors")
    pnids = [p.strip() for p in listed.split(",") if p.strip()] if listed is not None else None
    outcomes = await request.config_dict[SERVICE].unblock_everywhere(
        request.match_info["number"], actor=actor(request), reason=_reason(request.query.get("reason")), pnids=pnids
    )
    return web.json_response({"results": [o.to_json() for o in outcomes]})


@routes.get("/api/everywhere/blocks/{number}")
async def blocked_on(request: web.Request) -> web.Response:
    """On which connectors a number is blocked (one outcome per connector: blocked / not_blocked)."""
    outcomes = await request.config_dict[SERVICE].blocked_on(request.match_info["number"])
    return web.json_response({"results": [o.to_json() for o in outcomes]})


def _optout_json(entry: Any) -> dict[str, Any]:
    shown = entry.to_json()
    return {
        "number": shown["number"],
        "display_number": shown["display_number"],
        "type": shown["type"],
        "opted_out_at": shown["blocked_at"],
        "reason": shown["reason"],
        "by": shown["blocked_by"],
        "source": shown["source"],
    }


@routes.get("/api/connectors/{pnid}/optouts")
async def list_optouts(request: web.Request) -> web.Response:
    """A connector's opt-outs, newest first."""
    entries = await request.config_dict[SERVICE].optouts(request.match_info["pnid"])
    return web.json_response({"optouts": [_optout_json(e) for e in entries]})


@routes.post("/api/connectors/{pnid}/optouts")
async def add_optout(request: web.Request) -> web.Response:
    """Opt a number out of template and marketing sends; 201 when new, 200 when it had opted out already."""
    service, pnid = path_connector(request)
    body = await json_object(request, _OPTOUT_FIELDS)
    reason = _reason(body.get("reason"))
    entry, created = await service.opt_out(pnid, body_number(body), actor=actor(request), reason=reason)
    return web.json_response(_optout_json(entry), status=201 if created else 200)


@routes.get("/api/connectors/{pnid}/optouts/{number}")
async def get_optout(request: web.Request) -> web.Response:
    """The opt-out a template send to this number or BSUID meets (any written form, following wa_id↔BSUID links:
    what the gateway checks); 200 with the entry, or 404 ``not_opted_out``."""
    number = request.match_info["number"]
    entry = await request.config_dict[SERVICE].optout_of(request.match_info["pnid"], number)
    if entry is None:
        raise NotOptedOut(f"{number[:64]} has not opted out on this connector")
    return web.json_response(_optout_json(entry))


@routes.delete("/api/connectors/{pnid}/optouts/{number}")
async def remove_optout(request: web.Request) -> web.Response:
    """Opt a number back in; 204, or 404 ``not_opted_out``."""
    return await undo(request, request.config_dict[SERVICE].opt_in, _reason(request.query.get("reason")))
