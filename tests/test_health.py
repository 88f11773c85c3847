"""/healthz and /readyz: liveness always, readiness only with the store answering; never behind admin auth."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from fakes import FakeGraph
from support import RedisServer


async def test_ready_when_the_store_answers(client: TestClient[Any, Any], fake_graph: FakeGraph) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ready", "checks": {"config": "ok", "store": "ok"}}
    assert resp.headers["Cache-Control"] == "no-store"
    assert (await client.head("/healthz")).status == 200
    assert fake_graph.requests == []  # answered by the proxy itself, never passed to the Graph API


async def test_not_ready_while_redis_is_down(own_redis_client: TestClient[Any, Any], own_redis: RedisServer) -> None:
    assert (await own_redis_client.get("/readyz")).status == 200
    own_redis.stop()
    resp = await own_redis_client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["config"] == "ok"
    assert body["checks"]["store"].startswith("the blocklist store is unavailable")
    assert body["reason"].startswith("store: the blocklist store is unavailable")
    assert (await own_redis_client.get("/healthz")).status == 200  # the process itself is fine: no restart wanted

    own_redis.start()
    resp = await own_redis_client.get("/readyz")  # the client reconnects by itself
    assert resp.status == 200, await resp.text()


async def test_health_needs_no_token_and_ignores_a_bad_one(client: TestClient[Any, Any]) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        resp = await client.get(path, headers={"Authorization": "Bearer wrong"})
        assert resp.status == 200, path
