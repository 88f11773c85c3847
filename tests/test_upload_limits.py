"""Streamed uploads have their own limits (gateway.uploads_*), so sends always find an upstream connection."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from wa_blocklist.proxy.app import create_app
from wa_blocklist.proxy.config import Config

from support import PNID, stand_in_graph

UPLOAD_BYTES = 4 * 1024 * 1024


class Upstream:
    """A Graph API that reads uploads as they come and answers sends at once."""

    def __init__(self) -> None:
        self.uploads_open = 0
        self.sends = 0

    async def upload(self, request: web.Request) -> web.Response:
        self.uploads_open += 1
        try:
            async for _ in request.content.iter_any():
                pass
            return web.json_response({"id": "4490709327384033"})
        finally:
            self.uploads_open -= 1

    async def send(self, request: web.Request) -> web.Response:
        await request.read()
        self.sends += 1
        return web.json_response({"messaging_product": "whatsapp", "messages": [{"id": "wamid.X"}]})


@pytest.fixture
async def limited(aiohttp_server: Any, aiohttp_client: Any, make_config: Any, clock: Any) -> Any:
    async def build(**gateway: Any) -> tuple[Upstream, TestClient[Any, Any]]:
        upstream = Upstream()
        app = web.Application()
        app.router.add_post("/v21.0/{pnid}/media", upstream.upload)
        app.router.add_post("/v21.0/{pnid}/messages", upstream.send)
        config: Config = make_config(await stand_in_graph(aiohttp_server, app, **gateway))
        return upstream, await aiohttp_client(create_app(config, clock=clock))

    return build


async def open_upload(client: TestClient[Any, Any]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Start a streamed upload and send its first 64 KB, then leave it open (a slow caller)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        f"POST /v21.0/{PNID}/media HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {UPLOAD_BYTES}\r\n\r\n".encode()
        + b"\xab" * 65536
    )
    await writer.drain()
    return reader, writer


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
    status_line, *lines = head.decode().split("\r\n")
    length = next(int(h.split(":", 1)[1]) for h in lines if h.lower().startswith("content-length:"))
    return int(status_line.split()[1]), json.loads(await reader.readexactly(length))


async def wait_for(predicate: Any, what: str) -> None:
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.01)  # polling a condition the server reaches on its own, with a bound
    raise AssertionError(f"timed out waiting for {what}")


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def one_upload_too_many(
    upstream: Upstream, client: TestClient[Any, Any], taken: int
) -> tuple[list[Connection], int, dict[str, Any]]:
    """Open ``taken`` uploads and wait until they stream upstream, then one more: the open ones and its answer."""
    open_uploads = [await open_upload(client) for _ in range(taken)]
    await wait_for(lambda: upstream.uploads_open == taken, f"{taken} uploads streaming upstream")
    reader, writer = await open_upload(client)
    status, body = await answer(reader)
    writer.close()
    return open_uploads, status, body


SEND = {"messaging_product": "whatsapp", "to": "573001234567", "type": "text", "text": {"body": "hola"}}


async def test_sends_are_served_while_the_upload_limit_is_taken_and_one_more_upload_gets_429(limited: Any) -> None:
    upstream, client = await limited(uploads_total=3, uploads_per_client=3)
    open_uploads, status, body = await one_upload_too_many(upstream, client, 3)
    assert status == 429
    assert body["error"]["code"] == 4 and body["error"]["is_transient"] is True
    assert "at most 3" in body["error"]["error_data"]["details"]

    for _ in range(5):  # sends never wait for the uploads
        resp = await client.post(f"/v21.0/{PNID}/messages", json=SEND)
        assert resp.status == 200, await resp.text()
    assert upstream.sends == 5

    for _, w in open_uploads:  # the callers hang up: their slots are freed
        w.transport.abort()
    await wait_for(lambda: upstream.uploads_open == 0, "the uploads to be abandoned upstream")
    resp = await client.post(f"/v21.0/{PNID}/media", data=b"\x01" * 200_000, headers={"Content-Type": "image/jpeg"})
    assert resp.status == 200, await resp.text()


async def test_one_client_cannot_take_every_upload_slot(limited: Any) -> None:
    upstream, client = await limited(uploads_total=10, uploads_per_client=2)
    open_uploads, status, body = await one_upload_too_many(upstream, client, 2)
    assert status == 429
    assert "this client already streams 2 uploads" in body["error"]["error_data"]["details"]
    for _, w in open_uploads:
        w.close()


async def test_a_trickling_upload_is_cut_by_the_pace_rule_before_the_pause_bound(limited: Any) -> None:
    upstream, client = await limited(upload_min_bytes=1_000_000, upload_pace_seconds=0.3)
    reader, writer = await open_upload(client)  # 64 KB, then 100 bytes every 50 ms: never a pause of 30 s
    await wait_for(lambda: upstream.uploads_open == 1, "the upload streaming upstream")

    async def trickle() -> None:
        while not writer.is_closing():
            writer.write(b"\xab" * 100)
            await writer.drain()
            await asyncio.sleep(0.05)  # the caller's pace, not synchronisation

    trickling = asyncio.create_task(trickle())
    status, body = await answer(reader)
    writer.close()
    trickling.cancel()
    assert status == 408
    assert "too slow" in body["error"]["error_data"]["details"]
    assert "gateway.upload_min_bytes" in body["error"]["error_data"]["details"]
    await wait_for(lambda: upstream.uploads_open == 0, "the upload to be abandoned upstream")


async def test_a_steady_upload_passes_the_pace_rule(limited: Any) -> None:
    upstream, client = await limited(upload_min_bytes=50_000, upload_pace_seconds=0.2)

    async def steady() -> Any:
        for _ in range(10):
            yield b"\xcd" * 100_000
            await asyncio.sleep(0.05)  # the caller's pace

    resp = await client.post(
        f"/v21.0/{PNID}/media", data=steady(), headers={"Content-Type": "application/octet-stream"}
    )
    assert resp.status == 200, await resp.text()
    assert upstream.uploads_open == 0
