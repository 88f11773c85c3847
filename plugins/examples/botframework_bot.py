"""A Bot Framework echo bot (botbuilder-core) that honours the blocklist both ways.

Run::

    pip install "wa-blocklist-proxy[botframework]"
    export WA_PHONE_NUMBER_ID=106540352242922      # the business number this bot answers on WhatsApp
    export MICROSOFT_APP_ID=... MICROSOFT_APP_PASSWORD=...   # empty for the Bot Framework Emulator
    export WA_BLOCKLIST_CONFIG=config.yaml        # or WA_BLOCKLIST_URL=http://127.0.0.1:8080 WA_BLOCKLIST_TOKEN=...
    python -m wa_blocklist.plugins.examples.botframework_bot   # listens on 127.0.0.1:3978/api/messages

``POST /api/notify`` with ``{"user": "<wa_id>", "text": "..."}`` sends a proactive message to a user the bot has
talked to: it answers 200 ``{"sent": true}``, or ``{"sent": false}`` when the user is blocked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from botbuilder.core import (  # type: ignore[import-untyped]
    BotFrameworkAdapter,
    BotFrameworkAdapterSettings,
    TurnContext,
)
from botbuilder.schema import Activity, ConversationReference  # type: ignore[import-untyped]
from botframework.connector.auth import ClaimsIdentity  # type: ignore[import-untyped]

from wa_blocklist.plugins.botframework import REFUSED_KEY, BlocklistMiddleware
from wa_blocklist.plugins.client import BlocklistClient
from wa_blocklist.plugins.examples._env import blocklist_from_env

log = logging.getLogger(__name__)

ADAPTER = web.AppKey("adapter", BotFrameworkAdapter)


class EchoBot:
    """Answers every message and remembers each user's conversation for proactive messages."""

    def __init__(self) -> None:
        self.references: dict[str, ConversationReference] = {}

    async def on_turn(self, context: TurnContext) -> None:
        activity = context.activity
        self.references[activity.from_property.id] = TurnContext.get_conversation_reference(activity)
        if activity.type == "message":
            await context.send_activity(f"You said: {activity.text}")


BOT = web.AppKey("bot", EchoBot)


async def messages(request: web.Request) -> web.Response:
    if "application/json" not in request.headers.get("Content-Type", ""):
        return web.Response(status=415)
    activity = Activity().deserialize(await request.json())
    auth_header = request.headers.get("Authorization", "")
    await request.app[ADAPTER].process_activity(activity, auth_header, request.app[BOT].on_turn)
    return web.Response(status=201)


async def notify(request: web.Request) -> web.Response:
    body: dict[str, Any] = await request.json()
    reference = request.app[BOT].references.get(str(body.get("user", "")))
    if reference is None:
        return web.json_response({"error": "no conversation with this user yet"}, status=404)
    sent: list[bool] = []

    async def callback(context: TurnContext) -> None:
        await context.send_activity(str(body.get("text", "")))
        sent.append(not context.turn_state.get(REFUSED_KEY))

    adapter = request.app[ADAPTER]
    if adapter.settings.app_id:
        await adapter.continue_conversation(reference, callback, bot_id=adapter.settings.app_id)
    else:  # no app id (the Emulator, local runs): an anonymous identity, so no token is requested
        anonymous = ClaimsIdentity(claims={}, is_authenticated=True)
        await adapter.continue_conversation(reference, callback, claims_identity=anonymous)
    return web.json_response({"sent": all(sent)})


def create_app(
    blocklist: BlocklistClient, phone_number_id: str, app_id: str = "", app_password: str = ""
) -> web.Application:
    """The bot's aiohttp application: ``POST /api/messages`` (the Bot Framework) and ``POST /api/notify``."""
    adapter = BotFrameworkAdapter(BotFrameworkAdapterSettings(app_id, app_password))
    adapter.use(BlocklistMiddleware(blocklist, phone_number_id=phone_number_id))
    app = web.Application()
    app[ADAPTER] = adapter
    app[BOT] = EchoBot()

    async def open_blocklist(_: web.Application) -> AsyncIterator[None]:
        async with blocklist:
            yield

    app.cleanup_ctx.append(open_blocklist)
    app.router.add_post("/api/messages", messages)
    app.router.add_post("/api/notify", notify)
    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    bot = create_app(
        blocklist_from_env("botframework-example"),
        os.environ["WA_PHONE_NUMBER_ID"],
        os.environ.get("MICROSOFT_APP_ID", ""),
        os.environ.get("MICROSOFT_APP_PASSWORD", ""),
    )
    web.run_app(bot, host="127.0.0.1", port=3978)
