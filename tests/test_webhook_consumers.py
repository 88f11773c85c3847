"""Real webhook consumers behind the proxy: every forwarded body, changed or not, passes their signature check.

Three consumers, three ways of checking ``X-Hub-Signature-256``: whatsapp-api-js 6.3.0 (Node; ``WhatsAppAPI.post()``
re-escapes the raw text before hashing), pywa's ``webhook_updates_validator`` (HMAC of the raw bytes) and a plain
HMAC consumer (the fake contact center). Bodies carry Spanish/Portuguese text, emoji, ``/`` and lone surrogates; some
are forwarded as Meta sent them, others rebuilt because a blocked user's items were removed or the POST was split.
A consumer refusing a body would make the proxy answer Meta 502.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pywa import utils as pywa_utils

from wa_blocklist.proxy.app import create_app
from wa_blocklist.proxy.appkeys import SERVICE
from wa_blocklist.proxy.blocklist.service import Actor

import payloads as p
from fakes import sign
from support import APP_SECRET, PNID, PNID_BR, require_binary, wrote_recently

JS = Path(__file__).parent / "js"
CORPUS = Path(__file__).parent / "data" / "webhooks"
CORPUS_PNID = "106540352242922"
ALLOWED = "573001234567"
BLOCKED = "573007654321"
BR_ALLOWED = "5511987650000"
TEXTS = [
    "Hola, ¿me ayudan con mi pedido? Está en camino / o no",
    "Olá! Não recebi a confirmação 😀👍🏽",
    "emoji cut in half: \ud83d and a lone low \ude00 too",
    'quotes " backslash \\ slash / tab \t newline \n DEL \x7f',
]


@pytest.fixture
async def js_consumer() -> AsyncIterator[str]:
    """whatsapp-api-js as a contact center (tests/js/webhook_consumer.mjs); yields its webhook URL."""
    node = require_binary("node")
    if not (JS / "node_modules" / "whatsapp-api-js").exists():
        pytest.skip("whatsapp-api-js is not installed (make test runs npm ci in tests/js)")
    process = await asyncio.create_subprocess_exec(
        node, str(JS / "webhook_consumer.mjs"), APP_SECRET, cwd=JS, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
    assert line.startswith("listening "), line
    yield f"http://127.0.0.1:{int(line.split()[1])}/webhooks/whatsapp"
    process.terminate()
    await process.wait()


@pytest.fixture
async def pywa_consumer() -> AsyncIterator[str]:
    """A contact center that checks signatures with pywa's own validator."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        valid = pywa_utils.webhook_updates_validator(APP_SECRET, body, request.headers.get("X-Hub-Signature-256", ""))
        return web.Response(status=200 if valid else 401, text="ok" if valid else "bad signature")

    app = web.Application()
    app.router.add_post("/webhooks/whatsapp", handle)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("/webhooks/whatsapp"))
    await server.close()


def bodies() -> list[tuple[str, bytes]]:
    """(name, body) pairs: nobody blocked, a blocked user's items among them, two connectors in one POST."""
    found: list[tuple[str, bytes]] = []
    for i, text in enumerate(TEXTS):
        allowed = p.text(ALLOWED, text)
        found.append((f"untouched-{i}", p.encode(p.envelope(p.messages_change(PNID, [allowed])))))
        mixed = p.messages_change(PNID, [allowed, p.text(BLOCKED, "x")])
        found.append((f"rebuilt-{i}", p.encode(p.envelope(mixed, p.statuses_change(PNID, p.status(BLOCKED))))))
        split = p.envelope(p.messages_change(PNID, [allowed]), p.messages_change(PNID_BR, [p.text(BR_ALLOWED, text)]))
        found.append((f"split-{i}", p.encode(split)))
    return found


async def run_through_proxy(make_config, clock, aiohttp_client, consumer_url: str) -> list[str]:
    def to_consumer(data: dict[str, Any]) -> None:
        for i, connector in enumerate(data["connectors"]):
            connector["app_secret"] = APP_SECRET  # one Meta app
            connector["forward_webhooks_to"] = consumer_url + ("?n=br" if i else "")

    client = await aiohttp_client(create_app(make_config(to_consumer), clock=clock))
    service = client.app[SERVICE]
    await wrote_recently(service, PNID, BLOCKED)
    await service.block(PNID, BLOCKED, actor=Actor("supervisor", "test"))
    refused = []
    for name, body in bodies():
        resp = await client.post(
            "/webhooks/whatsapp", data=body, headers={"X-Hub-Signature-256": sign(APP_SECRET, body)}
        )
        if resp.status != 200:
            refused.append(f"{name}: {resp.status} {await resp.text()}")
    return refused


async def run_corpus_through_proxy(make_config, clock, aiohttp_client, consumer_url: str) -> list[str]:
    """Every corpus file with a raw Meta form, its user blocked (so most are rebuilt)."""

    def corpus(data: dict[str, Any]) -> None:
        data["connectors"][0].update(
            phone_number_id=CORPUS_PNID, waba_id="102290129340398", forward_webhooks_to=consumer_url
        )

    client = await aiohttp_client(create_app(make_config(corpus), clock=clock))
    service = client.app[SERVICE]
    refused = []
    for raw in sorted(CORPUS.glob("*.raw")):
        case = json.loads(raw.with_suffix(".json").read_text(encoding="utf-8"))
        if case.get("user"):
            who = case["user"]["wa_id"] or case["user"]["bsuid"]
            await service.block(CORPUS_PNID, who, actor=Actor("supervisor", "test"), force=True)
        body = raw.read_bytes()
        resp = await client.post(
            "/webhooks/whatsapp", data=body, headers={"X-Hub-Signature-256": sign(APP_SECRET, body)}
        )
        if resp.status != 200:
            refused.append(f"{raw.stem}: {resp.status} {await resp.text()}")
    return refused


async def test_whatsapp_api_js_accepts_every_forwarded_body(make_config, clock, aiohttp_client, js_consumer):
    assert await run_through_proxy(make_config, clock, aiohttp_client, js_consumer) == []
    assert await run_corpus_through_proxy(make_config, clock, aiohttp_client, js_consumer) == []
    async with aiohttp.ClientSession() as http:
        async with http.get(js_consumer) as resp:
            seen = await resp.json()
        assert len(seen) > len(bodies()) and all(r["verified"] for r in seen)
        assert any(r["handled"] == "ok" for r in seen)  # post() itself ran, not only the signature check
        # What the proxy used to send: UTF-8 JSON signed over its bytes. The library re-escapes it and refuses it.
        utf8 = json.dumps(p.envelope(p.messages_change(PNID, [p.text(ALLOWED, TEXTS[1])])), ensure_ascii=False).encode()
        async with http.post(js_consumer, data=utf8, headers={"X-Hub-Signature-256": sign(APP_SECRET, utf8)}) as resp:
            assert resp.status == 401


async def test_pywa_validator_accepts_every_forwarded_body(make_config, clock, aiohttp_client, pywa_consumer):
    assert await run_through_proxy(make_config, clock, aiohttp_client, pywa_consumer) == []
    assert await run_corpus_through_proxy(make_config, clock, aiohttp_client, pywa_consumer) == []


async def test_plain_hmac_consumer_accepts_every_forwarded_body(make_config, clock, aiohttp_client, contact_center):
    assert contact_center.server is not None
    url = str(contact_center.server.make_url("/webhooks/whatsapp"))
    assert await run_through_proxy(make_config, clock, aiohttp_client, url) == []
    assert await run_corpus_through_proxy(make_config, clock, aiohttp_client, url) == []
    assert contact_center.rejected == [] and len(contact_center.received) > len(bodies())
