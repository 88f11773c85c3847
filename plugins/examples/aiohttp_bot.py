"""An echo bot on plain aiohttp that honours the blocklist both ways, with no framework in between.

Run::

    export WA_PHONE_NUMBER_ID=... WA_ACCESS_TOKEN=... META_APP_SECRET=... META_VERIFY_TOKEN=...
    export WA_BLOCKLIST_CONFIG=config.yaml        # or WA_BLOCKLIST_URL=http://127.0.0.1:8080 WA_BLOCKLIST_TOKEN=...
    python -m wa_blocklist.plugins.examples.aiohttp_bot        # listens on 127.0.0.1:9000

* Webhooks: :func:`wa_blocklist.plugins.aiohttp_webhook.webhook_middleware` removes blocked users' items and re-signs
  the body, so ``handle_webhook`` verifies the signature as usual and never sees a blocked user.
* Sends: :func:`wa_blocklist.plugins.aiohttp_client.graph_client_middleware` on the Graph session raises
  ``GraphSendRefused`` (HTTP 400, Graph code 139900) for a blocked recipient instead of sending.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from wa_blocklist.plugins.aiohttp_client import GraphSendRefused, graph_client_middleware
from wa_blocklist.plugins.aiohttp_webhook import webhook_middleware
from wa_blocklist.plugins.client import BlocklistClient
from wa_blocklist.plugins.examples._env import WhatsAppSettings, blocklist_from_env

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/whatsapp"
GRAPH = web.AppKey("graph", aiohttp.ClientSession)
SETTINGS = web.AppKey("settings", WhatsAppSettings)


async def send_text(app: web.Application, to: str, text: str) -> None:
    """Send a text message through Graph; a blocked recipient is refused before anything is sent."""
    settings = app[SETTINGS]
    url = f"{settings.graph_url}/v21.0/{settings.phone_number_id}/messages"
    body = {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": text}}
    try:
        async with app[GRAPH].post(url, json=body) as response:
            response.raise_for_status()
    except GraphSendRefused as refused:
        log.info("not sent: %s", refused.graph_error["error"]["message"])


async def verify(request: web.Request) -> web.Response:
    """Meta's webhook verification handshake."""
    query = request.query
    if query.get("hub.mode") == "subscribe" and hmac.compare_digest(
        query.get("hub.verify_token", ""), request.app[SETTINGS].verify_token
    ):
        return web.Response(text=query.get("hub.challenge", ""))
    return web.Response(status=403, text="verification failed")


async def handle_webhook(request: web.Request) -> web.Response:
    body = await request.read()
    expected = "sha256=" + hmac.new(request.app[SETTINGS].app_secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("X-Hub-Signature-256", "")):
        return web.Response(status=403, text="bad signature")
    for entry in json.loads(body).get("entry", []):
        for change in entry.get("changes", []):
            for message in change.get("value", {}).get("messages", []):
                if message.get("type") == "text" and message.get("from"):
                    await send_text(request.app, message["from"], f"You said: {message['text']['body']}")
    return web.Response(text="ok")


def create_app(blocklist: BlocklistClient, settings: WhatsAppSettings) -> web.Application:
    """The bot's aiohttp application (the blocklist and the Graph session open and close with it)."""
    app = web.Application(
        middlewares=[webhook_middleware(blocklist, path=WEBHOOK_PATH, app_secret=settings.app_secret)]
    )
    app[SETTINGS] = settings

    async def resources(app: web.Application) -> AsyncIterator[None]:
        headers = {"Authorization": f"Bearer {settings.access_token}"}
        async with (
            blocklist,
            aiohttp.ClientSession(headers=headers, middlewares=(graph_client_middleware(blocklist),)) as graph,
        ):
            app[GRAPH] = graph
            yield

    app.cleanup_ctx.append(resources)
    app.router.add_get(WEBHOOK_PATH, verify)
    app.router.add_post(WEBHOOK_PATH, handle_webhook)
    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    web.run_app(
        create_app(blocklist_from_env("aiohttp-example"), WhatsAppSettings.from_env()), host="127.0.0.1", port=9000
    )
