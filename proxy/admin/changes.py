"""Admin API routes that change existing blocks: update a block's reason or expiry, restore an export.

- ``PATCH /api/connectors/{pnid}/blocks/{number}`` with ``reason`` and/or ``duration`` / ``expires_at`` (``null``
  makes the block permanent): an explicit action, audited as ``update``. Blocking an already-blocked number with
  ``POST`` leaves its reason as it is; this is how a supervisor changes it.
- ``POST /api/connectors/{pnid}/blocks/restore`` (CSV body, admin only): an export put back as it was, without the
  24-hour rule, audited with the source ``admin_api_restore`` (see
  :func:`wa_blocklist.proxy.blocklist.csv_io.restore_csv`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..base.errors import BadRequest
from ..blocklist.csv_io import restore_csv
from ..blocklist.service import parse_duration, parse_expires_at
from .csv_routes import apply_csv
from .http import actor, json_object, path_connector

routes = web.RouteTableDef()

_PATCH_FIELDS = frozenset({"reason", "duration", "expires_at"})


@routes.patch("/api/connectors/{pnid}/blocks/{number}")
async def update_block(request: web.Request) -> web.Response:
    """Change a block's reason and/or expiry; 200 with the updated entry."""
    service, pnid = path_connector(request)
    body = await _patch_body(request)
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise BadRequest('"reason" must be a string')
    duration = body.get("duration")
    expires_at = body.get("expires_at", ...)
    if duration is not None and expires_at not in (..., None):
        raise BadRequest("give either duration or expires_at, not both")
    options: dict[str, Any] = {}
    if duration is not None:
        options["duration_seconds"] = parse_duration(duration)
    elif expires_at is None:
        options["permanent"] = True
    elif expires_at is not ...:
        options["expires_at_ms"] = parse_expires_at(expires_at)
    entry = await service.update(pnid, request.match_info["number"], actor=actor(request), reason=reason, **options)
    return web.json_response(entry.to_json())


async def _patch_body(request: web.Request) -> dict[str, Any]:
    body = await json_object(request, _PATCH_FIELDS, '{"reason": "spam", "duration": "7d"}')
    if not body:
        raise BadRequest("nothing to change: give a reason, a duration or expires_at (null: permanent)")
    return body


@routes.post("/api/connectors/{pnid}/blocks/restore")
async def restore_blocks(request: web.Request) -> web.Response:
    """Restore an exported CSV as it was; ``?dry_run=true`` reports without writing."""
    return await apply_csv(request, restore_csv, "admin_api_restore")
