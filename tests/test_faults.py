"""Faults with real parts: Redis stopped, restarted and slowed under a running proxy; the proxy process stopped
gracefully and killed with its embedded Redis."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from wa_blocklist.proxy.app import create_app
from wa_blocklist.proxy.appkeys import CONFIG, SERVICE
from wa_blocklist.proxy.base.errors import StoreUnavailable
from wa_blocklist.proxy.blocklist.service import Actor, BlocklistService
from wa_blocklist.proxy.config import StoreConfig
from wa_blocklist.proxy.graph.errors import RECIPIENT_BLOCKED
from wa_blocklist.proxy.graph.identity import from_wa_id
from wa_blocklist.proxy.store.client import open_store

import payloads as p
from fakes import FakeContactCenter, FakeGraph, sign
from support import (
    APP_SECRET,
    PNID,
    PNID_BR,
    ConfigFactory,
    FakeClock,
    Proxy,
    RedisServer,
    auth,
    base_config_data,
    free_port,
    record,
    redis_alive,
    wait_until,
    wrote_recently,
)

pytestmark = pytest.mark.slow


async def test_admin_api_answers_503_while_redis_is_down_and_recovers(
    own_redis_client: TestClient[Any, Any], own_redis: RedisServer
) -> None:
    assert (await own_redis_client.get("/admin/api/connectors", headers=auth())).status == 200
    own_redis.stop()
    for path in ["/admin/api/connectors", f"/admin/api/connectors/{PNID}/blocks"]:
        resp = await own_redis_client.get(path, headers=auth())
        assert resp.status == 503
        body = await resp.json()
        assert body["error"]["code"] == "store_unavailable"
        assert "unavailable" in body["error"]["message"]
    resp = await own_redis_client.post(
        f"/admin/api/connectors/{PNID}/blocks", json={"number": "+57 300 123 4567"}, headers=auth()
    )
    assert resp.status == 503
    own_redis.start()  # same port: the proxy reconnects by itself
    resp = await own_redis_client.get(f"/admin/api/connectors/{PNID}/blocks", headers=auth())
    assert resp.status == 200
    assert await resp.json() == {"blocks": [], "next_cursor": None}


# --- Redis down under a running proxy: every face fails safe, nothing blocked leaks -----------------------------

ALLOWED = "573009876543"
BLOCKED = "573001234567"
BR_USER = "5511987650000"


def text_message(to: str) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": "hola"}}


async def post_webhook(client: TestClient[Any, Any], payload: dict[str, Any], secret: str = APP_SECRET) -> Any:
    body = p.encode(payload)
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(secret, body)}
    return await client.post("/webhooks/whatsapp", data=body, headers=headers)


@pytest.fixture
async def proxy_on_own_redis(
    aiohttp_client: Any, make_config: ConfigFactory, clock: FakeClock, own_redis: RedisServer
) -> TestClient[Any, Any]:
    """The whole proxy on its own Redis; connector 0 denies on store errors (the default), connector 1 allows."""

    def changes(data: dict[str, Any]) -> None:
        data["store"] = {"redis_url": own_redis.url, "timeout_seconds": 0.3}
        data["connectors"][1]["on_store_error"] = "allow"

    client: TestClient[Any, Any] = await aiohttp_client(create_app(make_config(changes), clock=clock))
    return client


async def test_redis_stopped_under_a_running_proxy_every_face_fails_safe_then_recovers(
    proxy_on_own_redis: TestClient[Any, Any],
    own_redis: RedisServer,
    fake_graph: FakeGraph,
    contact_center: FakeContactCenter,
) -> None:
    client = proxy_on_own_redis
    service = client.app[SERVICE]
    cache = service.cache
    assert cache is not None
    await asyncio.wait_for(cache.subscribed.wait(), 10)
    await wrote_recently(service, PNID, BLOCKED, ALLOWED)
    await service.block(PNID, BLOCKED, actor=Actor("supervisor", "test"))
    # The cache now holds "not blocked" for ALLOWED: the outage must not let it be served later.
    assert (await client.post(f"/v21.0/{PNID}/messages", json=text_message(ALLOWED))).status == 200
    assert cache.get(PNID, [from_wa_id(ALLOWED).key]) == (True, None)
    sent_before = len(fake_graph.requests)

    own_redis.stop()
    await asyncio.wait_for(cache.unsubscribed.wait(), 10)

    # Inbound: 503 so Meta retries; nothing reaches the contact center unchecked.
    for sender in (ALLOWED, BLOCKED):
        resp = await post_webhook(client, p.envelope(p.messages_change(PNID, [p.text(sender)])))
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "store_unavailable"
    assert contact_center.received == []

    # Outbound, on_store_error: deny → Graph-style transient 503, nothing sent to Meta.
    for to in (ALLOWED, BLOCKED):
        resp = await client.post(f"/v21.0/{PNID}/messages", json=text_message(to))
        assert resp.status == 503
        error = (await resp.json())["error"]
        assert (error["code"], error["is_transient"], error["type"]) == (131016, True, "OAuthException")
    assert len(fake_graph.requests) == sent_before

    # Outbound, on_store_error: allow → passes.
    resp = await client.post(f"/v21.0/{PNID_BR}/messages", json=text_message(BR_USER))
    assert resp.status == 200
    assert fake_graph.requests[-1].json()["to"] == BR_USER

    # Admin API: 503 in its own format.
    for method, path in [("GET", "/admin/api/connectors"), ("GET", f"/admin/api/connectors/{PNID}/check/{ALLOWED}")]:
        resp = await client.request(method, path, headers=auth())
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "store_unavailable"

    # Redis comes back empty on the same port, and ALLOWED is blocked there before our subscription is back.
    own_redis.start()
    async with open_store(StoreConfig(redis_url=own_redis.url)) as other:
        await BlocklistService(other, client.app[CONFIG].current).block(
            PNID, ALLOWED, actor=Actor("other-replica", "test"), force=True
        )
    resp = await client.post(f"/v21.0/{PNID}/messages", json=text_message(ALLOWED))
    assert resp.status == 400  # the proxy reconnected by itself and the old cached answer is gone
    assert (await resp.json())["error"]["code"] == RECIPIENT_BLOCKED
    assert len(fake_graph.requests) == sent_before + 1  # only the on_store_error: allow send above

    await asyncio.wait_for(cache.subscribed.wait(), 10)
    # (This test Redis keeps nothing across a restart; the durability of blocks is tested with the embedded store.)
    resp = await post_webhook(client, p.envelope(p.messages_change(PNID, [p.text(ALLOWED), p.text("573005550000")])))
    assert resp.status == 200
    [delivered] = contact_center.received
    assert [m["from"] for m in delivered.json()["entry"][0]["changes"][0]["value"]["messages"]] == ["573005550000"]
    assert (await client.get("/admin/api/connectors", headers=auth())).status == 200


# --- Redis slowed through a TCP relay -------------------------------------------------------------------------


class SlowRelay:
    """A TCP relay in front of Redis that holds every chunk for ``delay`` seconds in each direction.

    The sleep is the fault being injected (a slow network or an overloaded Redis), not synchronisation.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.delay = 0.0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)
                sink.write(chunk)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


@pytest.fixture
async def slow_relay(own_redis: RedisServer) -> AsyncIterator[SlowRelay]:
    relay = SlowRelay(own_redis.port)
    await relay.start()
    yield relay
    await relay.close()


async def test_redis_too_slow_is_the_same_as_redis_down_and_recovers(
    aiohttp_client: Any,
    make_config: ConfigFactory,
    clock: FakeClock,
    slow_relay: SlowRelay,
    fake_graph: FakeGraph,
    contact_center: FakeContactCenter,
) -> None:
    def through_relay(data: dict[str, Any]) -> None:
        data["store"] = {"redis_url": slow_relay.url, "timeout_seconds": 0.2, "local_cache": False}
        data["connectors"][1]["on_store_error"] = "allow"

    client: TestClient[Any, Any] = await aiohttp_client(create_app(make_config(through_relay), clock=clock))
    await wrote_recently(client.app[SERVICE], PNID, ALLOWED)
    assert (await client.post(f"/v21.0/{PNID}/messages", json=text_message(ALLOWED))).status == 200

    slow_relay.delay = 1.0  # every Redis answer now arrives after the store timeout
    resp = await client.post(f"/v21.0/{PNID}/messages", json=text_message(ALLOWED))
    assert resp.status == 503
    assert (await resp.json())["error"]["is_transient"] is True
    assert (await client.post(f"/v21.0/{PNID_BR}/messages", json=text_message(BR_USER))).status == 200
    resp = await post_webhook(client, p.envelope(p.messages_change(PNID, [p.text(ALLOWED)])))
    assert resp.status == 503
    assert contact_center.received == []
    resp = await client.get(f"/admin/api/connectors/{PNID}/blocks", headers=auth())
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "store_unavailable"
    assert [r.json()["to"] for r in fake_graph.requests] == [ALLOWED, BR_USER]

    slow_relay.delay = 0.0
    resp = await client.post(
        f"/admin/api/connectors/{PNID}/blocks", json={"number": ALLOWED, "reason": "after the slowdown"}, headers=auth()
    )
    assert resp.status == 201
    resp = await client.post(f"/v21.0/{PNID}/messages", json=text_message(ALLOWED))
    assert resp.status == 400
    resp = await post_webhook(client, p.envelope(p.messages_change(PNID, [p.text(ALLOWED)])))
    assert resp.status == 200 and contact_center.received == []


# --- the proxy process: graceful shutdown on SIGTERM, kill -9 with its embedded Redis --------------------------


class HeldUpstream:
    """A Graph API stand-in that holds every request until the test releases it (an upstream still answering)."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.server: TestServer | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.arrived.set()
        await self.release.wait()
        return web.json_response({"messaging_product": "whatsapp", "messages": [{"id": "wamid.HELD"}]})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(app)
        await self.server.start_server()
        return str(self.server.make_url("")).rstrip("/")


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:  # accepted as the listener was closing: ask again
        return False
    writer.close()
    return False


async def test_sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_0(tmp_path: Path, redis_url: str) -> None:
    upstream = HeldUpstream()
    data = base_config_data(redis_url)
    data["graph"]["base_url"] = await upstream.start()
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(data))
    port = free_port()
    proxy = Proxy(config_path, port)
    await asyncio.to_thread(proxy.start)
    assert proxy.process is not None
    try:
        async with aiohttp.ClientSession() as session:
            in_flight = asyncio.create_task(
                session.post(f"http://127.0.0.1:{port}/v21.0/{PNID}/messages", json=text_message(ALLOWED))
            )
            await asyncio.wait_for(upstream.arrived.wait(), 10)
            proxy.process.send_signal(signal.SIGTERM)
            deadline = asyncio.get_running_loop().time() + 10
            while not await refused(port):  # the listener closes first, while the request is still held upstream
                assert asyncio.get_running_loop().time() < deadline, "the proxy kept accepting after SIGTERM"
                await asyncio.sleep(0.02)
            assert not in_flight.done() and proxy.process.poll() is None
            upstream.release.set()
            resp = await asyncio.wait_for(in_flight, 10)
            assert resp.status == 200
            assert (await resp.json())["messages"][0]["id"] == "wamid.HELD"
            resp.release()
        assert await asyncio.to_thread(proxy.process.wait, 30) == 0
    finally:
        upstream.release.set()
        await asyncio.to_thread(proxy.stop, signal.SIGKILL)
        assert upstream.server is not None
        await upstream.server.close()


async def test_kill_9_of_the_proxy_and_its_embedded_redis_loses_no_acknowledged_block(tmp_path: Path) -> None:
    data = base_config_data("")
    data["store"] = {"redis_url": "", "data_dir": "./data"}  # embedded, appendfsync: always (the default)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(data))
    data_dir = tmp_path / "data"
    proxy = Proxy(config_path, free_port())
    numbers = [f"5730012300{i:02d}" for i in range(20)]
    try:
        await asyncio.to_thread(proxy.start)
        assert proxy.process is not None
        redis_pid = redis_alive(data_dir)
        assert redis_pid is not None
        await record(config_path, *numbers)
        acknowledged = []
        for number in numbers:
            status, entry = await asyncio.to_thread(
                proxy.call, "POST", f"/admin/api/connectors/{PNID}/blocks", {"number": number, "reason": "abuse"}
            )
            assert status == 201
            acknowledged.append(entry)
        os.kill(redis_pid, signal.SIGKILL)  # both at once, right after the last acknowledgement
        os.kill(proxy.process.pid, signal.SIGKILL)
        await asyncio.to_thread(proxy.process.wait, 15)
        proxy.stop()  # reaps nothing more; closes the dead process's pipe
        wait_until(lambda: not Path(f"/proc/{redis_pid}").exists(), timeout=15, what="the embedded redis to die")

        await asyncio.to_thread(proxy.start)
        status, listing = await asyncio.to_thread(proxy.call, "GET", f"/admin/api/connectors/{PNID}/blocks?limit=100")
        assert status == 200
        assert sorted(listing["blocks"], key=lambda e: e["number"]) == sorted(acknowledged, key=lambda e: e["number"])
        status, audit = await asyncio.to_thread(proxy.call, "GET", f"/admin/api/connectors/{PNID}/audit?limit=100")
        assert status == 200 and len(audit["records"]) == len(numbers)
    finally:
        await asyncio.to_thread(proxy.stop)


async def test_one_store_operation_is_bounded_as_a_whole_not_per_round_trip(slow_relay: SlowRelay) -> None:
    # Per-read socket timeouts alone let a slow Redis hold a request for every handshake round trip and retry (18 s
    # measured for a 2 s timeout); the store's deadline ends the whole operation, handshake and retries included.
    slow_relay.delay = 30.0
    config = StoreConfig(redis_url=slow_relay.url, timeout_seconds=0.2)
    async with open_store(config) as store:
        assert store.deadline_seconds == 0.4
        with pytest.raises(StoreUnavailable, match="did not answer in time"):
            await store.get(PNID, "573001234567")
