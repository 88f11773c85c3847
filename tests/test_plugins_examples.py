"""The runnable examples under plugins/examples/, each driven end to end against the fakes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient
from pywa_async.errors import WhatsAppError

from wa_blocklist.plugins.client import BlocklistClient
from wa_blocklist.plugins.examples import aiohttp_bot, botframework_bot, pywa_bot, starlette_bot
from wa_blocklist.plugins.examples._env import WhatsAppSettings
from wa_blocklist.proxy.blocklist.service import BlocklistService
from wa_blocklist.proxy.graph.errors import RECIPIENT_BLOCKED

from fakes import FakeGraph, sign
from plugin_support import (
    ALLOWED,
    BLOCKED,
    answer_sends,
    block,
    blocklist_fixture,  # noqa: F401  (the blocklist fixture, both modes)
    dumps,
    messages_payload,
)
from support import APP_SECRET, PNID, VERIFY_TOKEN


@pytest.fixture
def settings(fake_graph: FakeGraph) -> WhatsAppSettings:
    return WhatsAppSettings(
        phone_number_id=PNID,
        access_token="bot-access-token",
        app_secret=APP_SECRET,
        verify_token=VERIFY_TOKEN,
        graph_url=answer_sends(fake_graph, r"/messages$", ALLOWED, "wamid.REPLY"),
    )


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Run an ASGI app's startup and shutdown, as uvicorn does."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, outbox.put))
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await task


def replies(fake_graph: FakeGraph) -> list[str]:
    return [r.json()["to"] for r in fake_graph.requests if r.path.endswith("/messages")]


def signed(body: bytes) -> dict[str, str]:
    return {"X-Hub-Signature-256": sign(APP_SECRET, body), "Content-Type": "application/json"}


async def test_pywa_example(
    blocklist: BlocklistClient, service: BlocklistService, settings: WhatsAppSettings, fake_graph: FakeGraph
) -> None:
    await block(service, BLOCKED)
    app, wa = pywa_bot.create_bot(blocklist, settings)
    async with lifespan(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bot") as http:
        for sender in (BLOCKED, ALLOWED):
            body = dumps(messages_payload(PNID, (sender, "", "hi")))
            assert (await http.post(pywa_bot.WEBHOOK_PATH, content=body, headers=signed(body))).status_code == 200
        with pytest.raises(WhatsAppError) as err:
            await wa.send_message(to=BLOCKED, text="proactive")
        assert err.value.code == RECIPIENT_BLOCKED
    assert replies(fake_graph) == [ALLOWED]
    assert fake_graph.requests[0].json()["text"]["body"] == "You said: hi"


async def test_starlette_example(
    blocklist: BlocklistClient, service: BlocklistService, settings: WhatsAppSettings, fake_graph: FakeGraph
) -> None:
    await block(service, BLOCKED)
    app = starlette_bot.create_app(blocklist, settings)
    async with lifespan(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bot") as http:
        challenge = await http.get(
            starlette_bot.WEBHOOK_PATH,
            params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "42"},
        )
        assert challenge.text == "42"
        body = dumps(messages_payload(PNID, (BLOCKED, "", "insult"), (ALLOWED, "", "hello")))
        assert (await http.post(starlette_bot.WEBHOOK_PATH, content=body, headers=signed(body))).status_code == 200
    assert replies(fake_graph) == [ALLOWED]
    assert fake_graph.requests[0].headers["Authorization"] == "Bearer bot-access-token"


async def test_aiohttp_example(
    blocklist: BlocklistClient,
    service: BlocklistService,
    settings: WhatsAppSettings,
    fake_graph: FakeGraph,
    aiohttp_client: Any,
) -> None:
    await block(service, BLOCKED)
    bot: TestClient[Any, Any] = await aiohttp_client(aiohttp_bot.create_app(blocklist, settings))
    body = dumps(messages_payload(PNID, (BLOCKED, "", "insult"), (ALLOWED, "", "hello")))
    async with bot.post(aiohttp_bot.WEBHOOK_PATH, data=body, headers=signed(body)) as response:
        assert response.status == 200
    await aiohttp_bot.send_text(bot.app, BLOCKED, "proactive")  # refused and logged, never sent
    await aiohttp_bot.send_text(bot.app, ALLOWED, "proactive")
    assert replies(fake_graph) == [ALLOWED, ALLOWED]
    assert [r.json()["text"]["body"] for r in fake_graph.requests] == ["You said: hello", "proactive"]


async def test_botframework_example(
    blocklist: BlocklistClient, service: BlocklistService, fake_graph: FakeGraph, aiohttp_client: Any
) -> None:
    """The Bot Framework connector service is played by the recording fake server."""
    assert fake_graph.server is not None
    connector = str(fake_graph.server.make_url("")).rstrip("/")
    fake_graph.respond("POST", r"^/v3/conversations/", 200, {"id": "reply-1"})
    bot: TestClient[Any, Any] = await aiohttp_client(botframework_bot.create_app(blocklist, PNID))

    async def say(user: str, n: int) -> None:
        activity = {
            "type": "message",
            "id": f"in-{n}",
            "text": f"hi {n}",
            "channelId": "whatsapp",
            "serviceUrl": connector,
            "from": {"id": user},
            "recipient": {"id": PNID},
            "conversation": {"id": f"conversation-{user}"},
        }
        async with bot.post("/api/messages", json=activity) as response:
            assert response.status == 201

    await say(BLOCKED, 1)  # both users talk to the bot; then a supervisor blocks one of them
    await block(service, BLOCKED)
    await say(BLOCKED, 2)
    await say(ALLOWED, 3)
    for user, sent in ((BLOCKED, False), (ALLOWED, True)):
        async with bot.post("/api/notify", json={"user": user, "text": f"offer for {user}"}) as response:
            assert (await response.json()) == {"sent": sent}
    conversations = [(r.path.split("/")[3], r.json()["text"]) for r in fake_graph.requests]
    assert conversations == [
        (f"conversation-{BLOCKED}", "You said: hi 1"),
        (f"conversation-{ALLOWED}", "You said: hi 3"),
        (f"conversation-{ALLOWED}", f"offer for {ALLOWED}"),
    ]
