"""ASGI middleware for a bot's own WhatsApp webhook endpoint (Starlette, FastAPI, Quart, pywa's server...).

Pure ASGI, no dependency beyond this package::

    app = WebhookBlocklistMiddleware(app, blocklist, path="/webhooks/whatsapp", app_secret=APP_SECRET)

For each ``POST`` to ``path`` it reads the Meta webhook body, removes the blocked users' items
(``messages``, ``statuses``, ``calls``, ``contacts``), re-signs the body with ``app_secret`` when it changed
(only if the incoming signature was valid, so the bot's own check still rejects forgeries) and passes it on.
A body with nothing left is answered ``200 ok`` without calling the app. Everything else passes untouched. Nothing
is recorded from a body whose signature did not verify under ``app_secret``; a direct-mode middleware with
``record_inbound`` refuses to be built without it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Unpack

from ._webhook import SIGNATURE_HEADER, WebhookGuard, WebhookOptions
from .client import BlocklistClient

__all__ = ["WebhookBlocklistMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SIGNATURE = SIGNATURE_HEADER.lower().encode()


class _TooLarge(Exception):
    pass


class WebhookBlocklistMiddleware:
    """Drops blocked users' items from WhatsApp webhooks before the wrapped ASGI app sees them.

    Args:
        app: the bot's ASGI application.
        blocklist: the blocklist to check against (start it in the app's lifespan, or before serving).
        **options: ``path`` (exactly as in ``scope["path"]``), ``app_secret``, ``on_error``, ``record_inbound``,
            ``max_body_bytes``: see :class:`wa_blocklist.plugins._webhook.WebhookOptions`.

    Raises:
        ValueError: ``record_inbound`` on a direct blocklist without ``app_secret``, or a bad ``on_error``.
    """

    def __init__(self, app: ASGIApp, blocklist: BlocklistClient, **options: Unpack[WebhookOptions]) -> None:
        self.app = app
        self.guard = WebhookGuard(blocklist, options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.guard.guards(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(receive)
        except _TooLarge:
            await _respond(send, 413, "payload too large")
            return
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
        signature = next((v.decode("latin-1") for k, v in headers if k.lower() == _SIGNATURE), None)
        decision = await self.guard.decide(body, signature)
        if decision.respond is not None:
            await _respond(send, *decision.respond)
            return
        if decision.body is not body:
            headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(decision.body)).encode()))
        if decision.signature is not None:
            headers = [(k, v) for k, v in headers if k.lower() != _SIGNATURE]
            headers.append((_SIGNATURE, decision.signature.encode()))
        await self.app({**scope, "headers": headers}, _replay(decision.body, receive), send)

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.guard.max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app the whole (filtered) body once, then the real channel (disconnects)."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _respond(send: Send, status: int, text: str) -> None:
    payload = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
