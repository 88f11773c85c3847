"""A Starlette (or FastAPI) bot behind the ASGI middleware, sending through httpx with the blocklist transport.

Run::

    pip install starlette uvicorn httpx
    export WA_PHONE_NUMBER_ID=... WA_ACCESS_TOKEN=... META_APP_SECRET=... META_VERIFY_TOKEN=...
    export WA_BLOCKLIST_CONFIG=config.yaml        # or WA_BLOCKLIST_URL=http://127.0.0.1:8080 WA_BLOCKLIST_TOKEN=...
    uvicorn plugins.examples.starlette_bot:app --port 9000

The middleware wraps the whole ASGI app, so the route below is written as if there were no blocklist.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from wa_blocklist.plugins.asgi import WebhookBlocklistMiddleware
from wa_blocklist.plugins.client import BlocklistClient
from wa_blocklist.plugins.examples._env import WhatsAppSettings, blocklist_from_env
from wa_blocklist.plugins.httpx_transport import BlocklistTransport

WEBHOOK_PATH = "/webhooks/whatsapp"


def create_app(blocklist: BlocklistClient, settings: WhatsAppSettings) -> WebhookBlocklistMiddleware:
    """The bot's ASGI app wrapped in the blocklist middleware."""
    # The transport works for any httpx client, not only pywa's: Graph sends to blocked users get a local 400.
    graph = httpx.AsyncClient(
        base_url=settings.graph_url,
        headers={"Authorization": f"Bearer {settings.access_token}"},
        transport=BlocklistTransport(blocklist),
    )

    async def verify(request: Request) -> PlainTextResponse:
        query = request.query_params
        if query.get("hub.mode") == "subscribe" and hmac.compare_digest(
            query.get("hub.verify_token", ""), settings.verify_token
        ):
            return PlainTextResponse(query.get("hub.challenge", ""))
        return PlainTextResponse("verification failed", 403)

    async def webhook(request: Request) -> PlainTextResponse:
        body = await request.body()
        expected = "sha256=" + hmac.new(settings.app_secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Hub-Signature-256", "")):
            return PlainTextResponse("bad signature", 403)
        for entry in json.loads(body).get("entry", []):
            for change in entry.get("changes", []):
                for message in change.get("value", {}).get("messages", []):
                    if message.get("type") == "text" and message.get("from"):
                        reply = {
                            "messaging_product": "whatsapp",
                            "to": message["from"],
                            "type": "text",
                            "text": {"body": f"You said: {message['text']['body']}"},
                        }
                        await graph.post(f"/v21.0/{settings.phone_number_id}/messages", json=reply)
        return PlainTextResponse("ok")

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with blocklist, graph:
            yield

    routes = [Route(WEBHOOK_PATH, verify, methods=["GET"]), Route(WEBHOOK_PATH, webhook, methods=["POST"])]
    bot = Starlette(routes=routes, lifespan=lifespan)
    return WebhookBlocklistMiddleware(bot, blocklist, path=WEBHOOK_PATH, app_secret=settings.app_secret)


def __getattr__(name: str) -> Any:  # ``uvicorn plugins.examples.starlette_bot:app``
    if name == "app":
        return create_app(blocklist_from_env("starlette-example"), WhatsAppSettings.from_env())
    raise AttributeError(name)
