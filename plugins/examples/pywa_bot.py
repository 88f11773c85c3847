"""An echo bot on pywa that honours the blocklist both ways.

Run (pywa's server extra brings Starlette and uvicorn)::

    pip install "wa-blocklist-proxy[pywa]" "pywa[server]"
    export WA_PHONE_NUMBER_ID=... WA_ACCESS_TOKEN=... META_APP_SECRET=... META_VERIFY_TOKEN=...
    export WA_BLOCKLIST_CONFIG=config.yaml        # or WA_BLOCKLIST_URL=http://127.0.0.1:8080 WA_BLOCKLIST_TOKEN=...
    uvicorn plugins.examples.pywa_bot:app --port 9000

Point the Meta app's callback URL at ``https://<bot>/webhooks/whatsapp``. A blocked user's messages never reach
``echo``; ``wa.send_message`` to a blocked user raises ``WhatsAppError`` with code 139900.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pywa_async.client import WhatsApp
from pywa_async.types.message import Message
from starlette.applications import Starlette

from wa_blocklist.plugins.client import BlocklistClient
from wa_blocklist.plugins.examples._env import WhatsAppSettings, blocklist_from_env
from wa_blocklist.plugins.pywa import blocklist_session, guard_webhooks

WEBHOOK_PATH = "/webhooks/whatsapp"


def create_bot(blocklist: BlocklistClient, settings: WhatsAppSettings) -> tuple[Starlette, WhatsApp]:
    """The ASGI app serving the webhook and the pywa client, both guarded by ``blocklist``."""

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with blocklist, session:
            yield

    # Graph calls go to Meta (or the proxy) through the transport; blocked recipients are refused locally.
    upstream = None if settings.graph_url == "https://graph.facebook.com" else settings.graph_url
    session = blocklist_session(blocklist, upstream=upstream)
    app = Starlette(lifespan=lifespan)
    wa = WhatsApp(
        phone_id=settings.phone_number_id,
        token=settings.access_token,
        session=session,
        server=app,  # type: ignore[arg-type]  # pywa serves Starlette apps too (typed Flask | FastAPI)
        webhook_endpoint=WEBHOOK_PATH,
        verify_token=settings.verify_token,
        app_secret=settings.app_secret,
    )
    guard_webhooks(wa, blocklist)

    @wa.on_message()  # type: ignore[misc]  # pywa's decorator typing
    async def echo(_: WhatsApp, message: Message) -> None:
        await message.reply_text(f"You said: {message.text or message.type}")  # type: ignore[misc]  # typed as sync

    return app, wa


def __getattr__(name: str) -> Any:  # ``uvicorn plugins.examples.pywa_bot:app`` builds the app from the environment
    if name == "app":
        return create_bot(blocklist_from_env("pywa-example"), WhatsAppSettings.from_env())[0]
    raise AttributeError(name)
