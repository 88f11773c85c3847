"""aiohttp middleware for a bot's own WhatsApp webhook endpoint.

::

    app = web.Application(middlewares=[webhook_middleware(blocklist, path="/webhooks/whatsapp", app_secret=SECRET)])

For each ``POST`` to ``path`` the Meta webhook body is read, the blocked users' items are removed, the body is
re-signed with ``app_secret`` when it changed (only if the incoming signature was valid) and the handler gets the
filtered body through ``await request.read()``, ``request.json()``, ``request.text()`` or ``request.content``. A body
with nothing left is answered ``200 ok`` without calling the handler. Nothing is recorded from a body whose signature
did not verify under ``app_secret``; a direct-mode middleware with ``record_inbound`` refuses to be built without it.
"""

from __future__ import annotations

import asyncio
from typing import Unpack

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.typedefs import Handler, Middleware

from wa_blocklist.proxy.base.bodies import read_body
from wa_blocklist.proxy.base.errors import BodyTooLarge

from ._webhook import SIGNATURE_HEADER, WebhookGuard, WebhookOptions
from .client import BlocklistClient

__all__ = ["webhook_middleware"]


def webhook_middleware(blocklist: BlocklistClient, **options: Unpack[WebhookOptions]) -> Middleware:
    """An aiohttp middleware that drops blocked users' items from WhatsApp webhooks before the handler runs.

    Args:
        blocklist: the blocklist to check against (started before the app serves, e.g. in a cleanup context).
        **options: ``path`` (``request.path``), ``app_secret``, ``on_error``, ``record_inbound``,
            ``max_body_bytes``: see :class:`wa_blocklist.plugins._webhook.WebhookOptions`.

    Raises:
        ValueError: ``record_inbound`` on a direct blocklist without ``app_secret``, or a bad ``on_error``.
    """
    guard = WebhookGuard(blocklist, options)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not guard.guards(request.method, request.path):
            return await handler(request)
        try:
            body = await read_body(request, guard.max_body_bytes, within=None)
        except BodyTooLarge:
            return web.Response(status=413, text="payload too large")
        decision = await guard.decide(body, request.headers.get(SIGNATURE_HEADER))
        if decision.respond is not None:
            status, text = decision.respond
            return web.Response(status=status, text=text)
        headers = request.headers.copy()
        headers["Content-Length"] = str(len(decision.body))
        if decision.signature is not None:
            headers[SIGNATURE_HEADER] = decision.signature
        forwarded = request.clone(headers=headers)
        # aiohttp has no public way to give a request a new body; read(), json(), text() and post() all serve
        # this cache, which clone() leaves empty (the original stream is already consumed), and a handler that
        # streams request.content gets a fresh reader holding the same bytes.
        forwarded._read_bytes = decision.body
        content = StreamReader(request.protocol, 2**16, loop=asyncio.get_running_loop())
        if decision.body:
            content.feed_data(decision.body)
        content.feed_eof()
        forwarded._payload = content
        return await handler(forwarded)

    return middleware
