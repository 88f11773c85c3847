"""Admin API routes for CSV export and import of a connector's blocklist, and the upload step that restore shares
(see :mod:`wa_blocklist.proxy.blocklist.csv_io`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ..appkeys import CONFIG, SERVICE
from ..base.bodies import read_body
from ..base.errors import BadRequest
from ..blocklist.csv_io import MAX_BYTES, ImportReport, export_csv, import_csv
from .http import actor, path_connector

routes = web.RouteTableDef()


@routes.get("/api/connectors/{pnid}/blocks.csv")
async def export_blocks(request: web.Request) -> web.StreamResponse:
    """The connector's blocklist as a CSV download."""
    service = request.config_dict[SERVICE]
    pnid = request.match_info["pnid"]
    chunks = export_csv(service, pnid)
    first = await anext(chunks)  # errors (unknown connector, store down) still answer in the admin format
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="blocklist-{pnid}.csv"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    await response.write(first.encode())
    async for chunk in chunks:
        await response.write(chunk.encode())
    await response.write_eof()
    return response


@routes.post("/api/connectors/{pnid}/blocks/import")
async def import_blocks(request: web.Request) -> web.Response:
    """Import a CSV body (``number,reason[,duration]``); ``?dry_run=true`` checks without writing."""
    return await apply_csv(request, import_csv, "admin_api_import")


async def apply_csv(request: web.Request, apply: Callable[..., Awaitable[ImportReport]], source: str) -> web.Response:
    """Run an import or a restore of the CSV body on the path's connector, ``?dry_run=true`` writing nothing."""
    service, pnid = path_connector(request)
    flag = request.query.get("dry_run", "false").strip().lower()
    if flag not in ("true", "false", "1", "0", ""):
        raise BadRequest("dry_run must be true or false")
    body = await read_body(request, MAX_BYTES, within=request.config_dict[CONFIG].current.server.body_timeout_seconds)
    report = await apply(service, pnid, body, actor=actor(request, source), dry_run=flag in ("true", "1"))
    return web.json_response(report.to_json())
