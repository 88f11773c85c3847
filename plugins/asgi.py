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

from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from ._webhook import SIGNATURE_HEADER, OnError, check_on_error, check_recording, decide
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
        path: the webhook path(s) to guard, exactly as in ``scope["path"]``.
        app_secret: the Meta app secret: bodies are recorded from only when their signature verifies under it, and
            bodies that changed are re-signed with it (bots that verify signatures need it).
        on_error: when the blocklist cannot answer, ``deny`` answers 503 (Meta retries later), ``allow``
            forwards the body unchecked.
        record_inbound: record message senders as having written now (direct mode, needs ``app_secret``; enables
            blocking under Meta's 24-hour rule for a bot that runs without the proxy).
        max_body_bytes: larger bodies are answered 413 (Meta's payloads are far smaller).
    """

    def __init__(
        self,
        app: ASGIApp,
        blocklist: BlocklistClient,
        *,
        path: str | Collection[str] = "/webhooks/whatsapp",
        app_secret: str | None = None,
        on_error: OnError = "deny",
        record_inbound: bool = True,
        max_body_bytes: int = 3 * 1024 * 1024,
    ) -> None:
        self.app = app
        self.blocklist = blocklist
        self.paths = frozenset([path] if isinstance(path, str) else path)
        self.app_secret = app_secret
        self.on_error = check_on_error(on_error)
        check_recording(blocklist, record_inbound, app_secret)
        self.record_inbound = record_inbound
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(receive)
        except _TooLarge:
            await _respond(send, 413, "payload too large")
            return
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
        signature = next((v.decode("latin-1") for k, v in headers if k.lower() == _SIGNATURE), None)
        decision = await decide(
            body,
            self.blocklist,
            app_secret=self.app_secret,
            signature=signature,
            on_error=self.on_error,
            record_inbound=self.record_inbound,
        )
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
            if size > self.max_body_bytes:
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
