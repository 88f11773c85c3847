"""Faults with real parts: a Redis server stopped and restarted under a running proxy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from proxy.app import create_app

from conftest import PNID, ConfigFactory, FakeClock, RedisServer, auth

pytestmark = pytest.mark.slow


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def faulty_client(
    aiohttp_client: Any, make_config: ConfigFactory, clock: FakeClock, own_redis: RedisServer
) -> TestClient[Any, Any]:
    def use_own_redis(data: dict[str, Any]) -> None:
        data["store"] = {"redis_url": own_redis.url, "timeout_seconds": 0.5}

    client: TestClient[Any, Any] = await aiohttp_client(create_app(make_config(use_own_redis), clock=clock))
    return client


async def test_admin_api_answers_503_while_redis_is_down_and_recovers(
    faulty_client: TestClient[Any, Any], own_redis: RedisServer
) -> None:
    assert (await faulty_client.get("/admin/api/connectors", headers=auth())).status == 200
    own_redis.stop()
    for path in ["/admin/api/connectors", f"/admin/api/connectors/{PNID}/blocks"]:
        resp = await faulty_client.get(path, headers=auth())
        assert resp.status == 503
        body = await resp.json()
        assert body["error"]["code"] == "store_unavailable"
        assert "unavailable" in body["error"]["message"]
    resp = await faulty_client.post(
        f"/admin/api/connectors/{PNID}/blocks", json={"number": "+57 300 123 4567"}, headers=auth()
    )
    assert resp.status == 503
    own_redis.start()  # same port: the proxy reconnects by itself
    resp = await faulty_client.get(f"/admin/api/connectors/{PNID}/blocks", headers=auth())
    assert resp.status == 200
    assert await resp.json() == {"blocks": [], "next_cursor": None}
