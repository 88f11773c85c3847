"""The floor under any aiohttp proxy: the least an aiohttp server can do per request, measured beside ours.

``python -m bench.floor hello PORT``: answer every request at once with a canned body (the server alone).
``python -m bench.floor proxy PORT UPSTREAM``: read the body, send it upstream with a pooled aiohttp client session,
answer with the upstream's status and body: no routing, checks, logs or metrics.
``python -m bench.floor reqwest PORT UPSTREAM``: the same relay with the gateway's upstream client (pyreqwest, as
``gateway_client`` builds it): the floor under the proxy's own send path. All run on uvloop, as the proxy does.

Nothing here is a product path; the bench runs these to show how much of the gap to nginx belongs to aiohttp itself.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import aiohttp
import uvloop
from aiohttp import web

from wa_blocklist.proxy.outbound.gateway import relay_client

BODY = b'{"messaging_product":"whatsapp","contacts":[{"input":"x","wa_id":"x"}],"messages":[{"id":"wamid.FLOOR"}]}'
SESSION = web.AppKey("session", aiohttp.ClientSession)


async def hello(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=BODY, content_type="application/json")


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[2])
    app = web.Application()
    if mode == "hello":
        app.router.add_route("*", "/{tail:.*}", hello)
    elif mode == "reqwest":
        upstream = sys.argv[3].rstrip("/")
        client = relay_client(1000).build()

        async def relay(request: web.Request) -> web.Response:
            body = await request.read()
            headers = [("Content-Type", request.headers.get("Content-Type", "application/octet-stream"))]
            built = client.request(request.method, upstream + request.raw_path).headers(headers).body_bytes(body)
            async with built.build_streamed() as resp:
                answer = (await resp.bytes()).to_bytes()
                return web.Response(body=answer, status=resp.status, content_type="application/json")

        app.router.add_route("*", "/{tail:.*}", relay)
    else:
        upstream = sys.argv[3].rstrip("/")

        async def session_ctx(app: web.Application) -> AsyncIterator[None]:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000)) as session:
                app[SESSION] = session
                yield

        async def proxy(request: web.Request) -> web.Response:
            body = await request.read()
            headers = {"Content-Type": request.headers.get("Content-Type", "application/octet-stream")}
            async with app[SESSION].request(
                request.method, upstream + request.raw_path, data=body, headers=headers
            ) as resp:
                return web.Response(body=await resp.read(), status=resp.status, content_type=resp.content_type)

        app.cleanup_ctx.append(session_ctx)
        app.router.add_route("*", "/{tail:.*}", proxy)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
