"""Generic plugins: the ASGI middleware (real Starlette), the aiohttp middleware and the aiohttp client middleware.

The webhook tests run one bot twice, behind each middleware; the bot verifies Meta's signature as a real one
would, so a body changed without a valid re-signature would be refused (403).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from wa_blocklist.plugins.aiohttp_client import GraphSendRefused, graph_client_middleware
from wa_blocklist.plugins.aiohttp_webhook import webhook_middleware
from wa_blocklist.plugins.asgi import WebhookBlocklistMiddleware
from wa_blocklist.plugins.client import BlocklistClient
from wa_blocklist.proxy.blocklist.service import BlocklistService, InboundUser
from wa_blocklist.proxy.graph.errors import RECIPIENT_BLOCKED, SERVICE_UNAVAILABLE

from fakes import FakeGraph, sign
from plugin_support import (
    ALLOWED,
    ALLOWED_BSUID,
    BLOCKED,
    BLOCKED_BSUID,
    block,
    blocklist_fixture,  # noqa: F401  (the blocklist fixture, both modes)
    dumps,
    messages_payload,
)
from support import APP_SECRET, PNID, free_port


@dataclass
class Bot:
    """What the bot's webhook handler saw: ``wa_id:text`` per message it was given."""

    seen: list[str] = field(default_factory=list)
    calls: int = 0

    def handle(self, body: bytes, signature: str) -> int:
        self.calls += 1
        if not signature or signature != sign(APP_SECRET, body):
            return 403
        try:
            payload = json.loads(body)
        except ValueError:
            return 400
        for entry in payload["entry"]:
            for change in entry["changes"]:
                for message in change["value"].get("messages", []):
                    self.seen.append(f"{message.get('from') or message.get('from_user_id')}:{message['text']['body']}")
        return 200


Post = Callable[[bytes, dict[str, str]], Awaitable[int]]
Server = Callable[..., Awaitable[tuple[Bot, Post]]]


@pytest.fixture(params=["asgi", "aiohttp"])
async def serve(request: pytest.FixtureRequest, aiohttp_client: Any) -> AsyncIterator[Server]:
    """Start the bot behind the middleware under test; returns the bot and a function that POSTs to it."""
    opened: list[httpx.AsyncClient] = []

    async def start(blocklist: BlocklistClient, path: str = "/webhooks/whatsapp", **options: Any) -> tuple[Bot, Post]:
        bot = Bot()
        if request.param == "asgi":

            async def endpoint(req: Request) -> PlainTextResponse:
                body = await req.body()
                return PlainTextResponse("ok", bot.handle(body, req.headers.get("X-Hub-Signature-256", "")))

            app = WebhookBlocklistMiddleware(
                Starlette(routes=[Route(path, endpoint, methods=["POST"])]), blocklist, path=path, **options
            )
            http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bot")
            opened.append(http)

            async def post(body: bytes, headers: dict[str, str], url: str = path) -> int:
                return (await http.post(url, content=body, headers=headers)).status_code

            return bot, post

        async def handler(req: web.Request) -> web.Response:
            body = await req.read()
            status = bot.handle(body, req.headers.get("X-Hub-Signature-256", ""))
            assert status != 200 or (await req.json())["entry"] is not None  # json() serves the filtered body too
            return web.Response(status=status, text="ok")

        aio = web.Application(middlewares=[webhook_middleware(blocklist, path=path, **options)])
        aio.router.add_post(path, handler)
        client = await aiohttp_client(aio)

        async def post_aiohttp(body: bytes, headers: dict[str, str], url: str = path) -> int:
            async with client.post(url, data=body, headers=headers) as response:
                return int(response.status)

        return bot, post_aiohttp

    yield start
    for http in opened:
        await http.aclose()


def signed(body: bytes) -> dict[str, str]:
    return {"X-Hub-Signature-256": sign(APP_SECRET, body), "Content-Type": "application/json"}


async def test_blocked_users_messages_never_reach_the_handler(
    serve: Server, blocklist: BlocklistClient, service: BlocklistService
) -> None:
    await block(service, BLOCKED, bsuid=BLOCKED_BSUID)
    bot, post = await serve(blocklist, app_secret=APP_SECRET)
    mixed = dumps(messages_payload(PNID, (BLOCKED, BLOCKED_BSUID, "insult"), (ALLOWED, ALLOWED_BSUID, "hello")))
    assert await post(mixed, signed(mixed)) == 200
    assert bot.seen == [f"{ALLOWED}:hello"]  # the re-signed body verified in the bot

    only_blocked = dumps(messages_payload(PNID, (BLOCKED, "", "again")))
    assert await post(only_blocked, signed(only_blocked)) == 200
    username = messages_payload(PNID, (BLOCKED, BLOCKED_BSUID, "username"))
    del username["entry"][0]["changes"][0]["value"]["messages"][0]["from"]  # only contacts[] pairs it with the wa_id
    by_contacts = dumps(username)
    assert await post(by_contacts, signed(by_contacts)) == 200
    assert bot.calls == 1  # answered for the bot: nothing was left to deliver


async def test_allowed_users_bodies_pass_byte_for_byte(
    serve: Server, blocklist: BlocklistClient, service: BlocklistService
) -> None:
    await block(service, BLOCKED)
    bot, post = await serve(blocklist, app_secret=APP_SECRET)
    body = json.dumps(messages_payload(PNID, (ALLOWED, "", "hola")), indent=2).encode()  # not our serialisation
    assert await post(body, signed(body)) == 200
    assert bot.seen == [f"{ALLOWED}:hola"]
    assert await post(b"not json", signed(b"not json")) == 400  # the bot's own answer: passed as it came
    assert bot.calls == 2


async def test_forged_payload_is_not_re_signed(
    serve: Server, blocklist: BlocklistClient, service: BlocklistService
) -> None:
    await block(service, BLOCKED)
    bot, post = await serve(blocklist, app_secret=APP_SECRET)
    mixed = dumps(messages_payload(PNID, (BLOCKED, "", "x"), (ALLOWED, "", "y")))
    assert await post(mixed, {"X-Hub-Signature-256": "sha256=" + "0" * 64}) == 403
    assert bot.seen == []


async def test_blocklist_down_policy(serve: Server) -> None:
    body = dumps(messages_payload(PNID, (ALLOWED, "", "hi")))
    async with BlocklistClient.http(f"http://127.0.0.1:{free_port()}", "any-token-000001") as unreachable:
        bot, post = await serve(unreachable, app_secret=APP_SECRET)
        assert await post(body, signed(body)) == 503  # Meta retries the delivery later
        assert bot.calls == 0
        bot, post = await serve(unreachable, app_secret=APP_SECRET, on_error="allow")
        assert await post(body, signed(body)) == 200
        assert bot.seen == [f"{ALLOWED}:hi"]


async def test_oversized_body_is_refused(serve: Server, config: Any) -> None:
    never_started = BlocklistClient.direct(config)  # raises if the middleware consulted it
    bot, post = await serve(never_started, app_secret=APP_SECRET, max_body_bytes=1024)
    body = dumps(messages_payload(PNID, (ALLOWED, "", "x" * 2000)))
    assert await post(body, signed(body)) == 413
    assert bot.calls == 0


async def test_direct_mode_records_senders_for_the_24_hour_rule(
    serve: Server, config: Any, clock: Any, service: BlocklistService
) -> None:
    async with BlocklistClient.direct(config, clock=clock) as blocklist:
        _, post = await serve(blocklist, app_secret=APP_SECRET)
        body = dumps(messages_payload(PNID, (ALLOWED, "", "hi")))
        assert await post(body, signed(body)) == 200
        assert await service.last_inbound_ms(PNID, ALLOWED) is not None  # a supervisor may now block them


async def test_outgoing_send_to_blocked_user_is_refused(
    blocklist: BlocklistClient, service: BlocklistService, fake_graph: FakeGraph
) -> None:
    await block(service, BLOCKED)
    assert fake_graph.server is not None
    base = str(fake_graph.server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession(middlewares=(graph_client_middleware(blocklist),)) as graph:
        message = {"messaging_product": "whatsapp", "to": "+57 300 123 4567", "type": "text", "text": {"body": "hi"}}
        with pytest.raises(GraphSendRefused) as err:
            await graph.post(f"{base}/v21.0/{PNID}/messages", json=message)
        assert err.value.status == 400 and err.value.graph_code == RECIPIENT_BLOCKED
        assert err.value.graph_error["error"]["code"] == RECIPIENT_BLOCKED
        async with graph.post(f"{base}/v21.0/{PNID}/messages", json={**message, "to": ALLOWED}) as response:
            assert response.status == 200
        async with graph.post(f"{base}/v21.0/{PNID}/media", data=b"\x00" * 10) as response:  # no recipient
            assert response.status == 200
    assert [(r.path, r.json().get("to") if r.path.endswith("messages") else None) for r in fake_graph.requests] == [
        (f"/v21.0/{PNID}/messages", ALLOWED),
        (f"/v21.0/{PNID}/media", None),
    ]


async def test_outgoing_send_when_blocklist_is_down(fake_graph: FakeGraph) -> None:
    assert fake_graph.server is not None
    url = str(fake_graph.server.make_url(f"/v21.0/{PNID}/messages"))
    unreachable = BlocklistClient.http(f"http://127.0.0.1:{free_port()}", "any-token-000001")
    async with (
        unreachable,
        aiohttp.ClientSession(middlewares=(graph_client_middleware(unreachable),)) as graph,
    ):
        with pytest.raises(GraphSendRefused) as err:
            await graph.post(url, json={"messaging_product": "whatsapp", "to": ALLOWED, "type": "text"})
    assert err.value.status == 503 and err.value.graph_code == SERVICE_UNAVAILABLE
    assert err.value.graph_error["error"]["is_transient"] is True
    assert fake_graph.requests == []


# --- nothing unverified changes state (issue 20) ----------------------------------------------------------------

STRANGER = "573009990000"


async def test_forged_webhook_records_nothing(
    serve: Server, config: Any, clock: Any, service: BlocklistService
) -> None:
    await block(service, BLOCKED, bsuid=BLOCKED_BSUID)  # learns BLOCKED ↔ BLOCKED_BSUID
    async with BlocklistClient.direct(config, clock=clock) as blocklist:
        bot, post = await serve(blocklist, app_secret=APP_SECRET)
        # A forgery pairing the blocked user's BSUID with a stranger's number, and a stranger "writing".
        forged = dumps(messages_payload(PNID, (STRANGER, BLOCKED_BSUID, "re-link me")))
        for headers in ({}, {"X-Hub-Signature-256": "sha256=" + "0" * 64}, signed(forged + b" ")):
            await post(forged, headers)
    assert await service.last_inbound_ms(PNID, STRANGER) is None  # not "recently active"
    assert await service.store.linked(PNID, BLOCKED_BSUID) == BLOCKED  # the link is untouched
    assert await service.store.linked(PNID, STRANGER) is None
    assert await service.check(PNID, BLOCKED_BSUID) == BLOCKED
    assert bot.seen == []  # the bot's own check refused every forgery


async def test_genuine_webhook_repairs_a_poisoned_link(
    serve: Server, config: Any, clock: Any, service: BlocklistService
) -> None:
    await block(service, BLOCKED, bsuid=BLOCKED_BSUID)
    # The state an unverified POST left before this fix: the BSUID re-linked to a stranger's number.
    await service.record_inbound(PNID, [InboundUser(STRANGER, BLOCKED_BSUID, active=False)])
    assert await service.store.linked(PNID, BLOCKED_BSUID) == STRANGER
    assert await service.store.linked(PNID, BLOCKED) is None  # the stale reverse entry went with it
    async with BlocklistClient.direct(config, clock=clock) as blocklist:
        bot, post = await serve(blocklist, app_secret=APP_SECRET)
        genuine = dumps(messages_payload(PNID, (BLOCKED, BLOCKED_BSUID, "hola")))
        assert await post(genuine, signed(genuine)) == 200
    assert await service.store.linked(PNID, BLOCKED_BSUID) == BLOCKED
    assert await service.store.linked(PNID, BLOCKED) == BLOCKED_BSUID
    assert await service.store.linked(PNID, STRANGER) is None  # no stale reverse entry left behind
    assert await service.check(PNID, BLOCKED_BSUID) == BLOCKED
    assert bot.seen == []  # and the blocked user's message was removed


async def test_direct_mode_recording_needs_the_app_secret(config: Any, clock: Any) -> None:
    direct = BlocklistClient.direct(config, clock=clock)
    with pytest.raises(ValueError, match="app_secret"):
        webhook_middleware(direct)
    with pytest.raises(ValueError, match="app_secret"):
        WebhookBlocklistMiddleware(Starlette(), direct)
    webhook_middleware(direct, record_inbound=False)  # checking without recording needs no secret
    WebhookBlocklistMiddleware(Starlette(), direct, app_secret=APP_SECRET)


async def test_aiohttp_handler_streaming_request_content_gets_the_filtered_body(
    aiohttp_client: Any, blocklist: BlocklistClient, service: BlocklistService
) -> None:
    await block(service, BLOCKED)
    streamed: list[bytes] = []

    async def handler(req: web.Request) -> web.Response:
        streamed.append(b"".join([chunk async for chunk in req.content.iter_any()]))
        return web.Response(text="ok")

    aio = web.Application(middlewares=[webhook_middleware(blocklist, app_secret=APP_SECRET)])
    aio.router.add_post("/webhooks/whatsapp", handler)
    client = await aiohttp_client(aio)
    for senders in ([(ALLOWED, "", "hi")], [(ALLOWED, "", "hi"), (BLOCKED, "", "x")]):
        body = dumps(messages_payload(PNID, *senders))
        async with client.post("/webhooks/whatsapp", data=body, headers=signed(body)) as response:
            assert response.status == 200
    unchanged, filtered = streamed
    assert unchanged == dumps(messages_payload(PNID, (ALLOWED, "", "hi")))
    assert [m["from"] for m in json.loads(filtered)["entry"][0]["changes"][0]["value"]["messages"]] == [ALLOWED]
