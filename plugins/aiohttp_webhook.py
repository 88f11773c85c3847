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
from collections.abc import Collection

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.typedefs import Handler, Middleware

from wa_blocklist.proxy.base.bodies import read_body
from wa_blocklist.proxy.base.errors import BodyTooLarge

from ._webhook import SIGNATURE_HEADER, OnError, check_on_error, check_recording, decide
from .client import BlocklistClient

__all__ = ["webhook_middleware"]


def webhook_middleware(
    blocklist: BlocklistClient,
    *,
    path: str | Collection[str] = "/webhooks/whatsapp",
    app_secret: str | None = None,
    on_error: OnError = "deny",
    record_inbound: bool = True,
    max_body_bytes: int = 3 * 1024 * 1024,
) -> Middleware:
    """An aiohttp middleware that drops blocked users' items from WhatsApp webhooks before the handler runs.

    Args:
        blocklist: the blocklist to check against (started before the app serves, e.g. in a cleanup context).
        path: the webhook path(s) to guard (``request.path``).
        app_secret: the Meta app secret: bodies are recorded from only when their signature verifies under it, and
            bodies that changed are re-signed with it.
        on_error: when the blocklist cannot answer, ``deny`` answers 503 (Meta retries later), ``allow``
            forwards the body unchecked.
        record_inbound: record message senders as having written now (direct mode; needs ``app_secret``).
        max_body_bytes: larger bodies are answered 413.

    Raises:
        ValueError: ``record_inbound`` on a direct blocklist without ``app_secret``, or a bad ``on_error``.
    """
    paths = frozenset([path] if isinstance(path, str) else path)
    check_on_error(on_error)
    check_recording(blocklist, record_inbound, app_secret)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST" or request.path not in paths:
            return await handler(request)
        try:
            body = await read_body(request, max_body_bytes, within=None)
        except BodyTooLarge:
            return web.Response(status=413, text="payload too large")
        decision = await decide(
            body,
            blocklist,
            app_secret=app_secret,
            signature=request.headers.get(SIGNATURE_HEADER),
            on_error=on_error,
            record_inbound=record_inbound,
        )
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
