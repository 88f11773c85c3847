"""The admin sign-in throttle is one count per client address across processes: apps on one Redis share it, a new
app (a restart) keeps it, a success anywhere reopens the address, and with the store down each process still counts
on its own (saying so once)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient

from wa_blocklist.proxy.admin.auth import AuthThrottle, TooManyAttempts
from wa_blocklist.proxy.app import create_app
from wa_blocklist.proxy.store.client import open_store
from wa_blocklist.proxy.store.throttle import AuthFailures, auth_key

from support import ADMIN_TOKEN, ConfigFactory, FakeClock, RedisServer, auth

AUTH_LOG = "wa_blocklist.proxy.admin.auth"
WRONG = {"Authorization": "Bearer wrong-token-guess-0002"}
SESSION = "/admin/api/session"

Clients = list[TestClient[Any, Any]]


@pytest.fixture
async def replicas(aiohttp_client: Any, make_config: ConfigFactory, clock: FakeClock) -> Clients:
    """Two proxy apps on one Redis (two replicas, or two workers), with one controlled clock."""
    config = make_config()
    return [await aiohttp_client(create_app(config, clock=clock)) for _ in range(2)]


async def status(client: TestClient[Any, Any], headers: dict[str, str]) -> int:
    async with client.get(SESSION, headers=headers) as resp:
        return resp.status


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == AUTH_LOG and r.levelno == logging.WARNING]


async def test_failures_through_two_apps_are_one_count(replicas: Clients, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=AUTH_LOG)
    a, b = replicas
    assert [await status(a, WRONG) for _ in range(5)] == [401] * 5  # the five free failures, all through A
    assert await status(b, WRONG) == 401  # the sixth, through B, closes the address for everyone
    for client in (a, b):
        resp = await client.get(SESSION, headers=auth())
        assert resp.status == 429  # even the right token
        assert resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"]["code"] == "too_many_attempts"
    logged = warnings(caplog)
    assert len(logged) == 6 and "closed for" not in logged[4] and logged[5].endswith("address closed for 1 s")
    assert all("127.0.0.1" in m and "wrong-token-guess" not in m and ADMIN_TOKEN not in m for m in logged)


async def test_a_restart_keeps_the_closing(
    aiohttp_client: Any, make_config: ConfigFactory, clock: FakeClock, redis_url: str
) -> None:
    config = make_config()
    first: TestClient[Any, Any] = await aiohttp_client(create_app(config, clock=clock))
    assert [await status(first, WRONG) for _ in range(7)] == [401] * 6 + [429]
    await first.close()
    restarted: TestClient[Any, Any] = await aiohttp_client(create_app(config, clock=clock))
    assert await status(restarted, auth()) == 429  # the new process knows the address is closed
    clock.advance(1)
    assert await status(restarted, WRONG) == 401  # open again after exactly the second it was told
    assert await status(restarted, auth()) == 429  # the seventh failure doubled the closing: 2 s
    with redis.Redis.from_url(redis_url) as r:  # bounded: the key expires an hour after the latest failure
        assert 3_590_000 < r.pttl(auth_key("127.0.0.1")) <= 3_600_000


async def test_a_success_on_one_app_reopens_the_address_for_both(replicas: Clients) -> None:
    a, b = replicas
    assert [await status(a, WRONG) for _ in range(5)] == [401] * 5
    assert await status(b, auth()) == 200  # a success through B forgets A's five failures
    assert [await status(a, WRONG) for _ in range(5)] == [401] * 5  # five free ones again
    assert await status(b, auth()) == 200


async def test_with_the_store_down_each_process_still_throttles(
    own_redis_client: TestClient[Any, Any], own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUTH_LOG)
    client = own_redis_client
    assert await status(client, auth()) == 200
    own_redis.stop()
    assert [await status(client, WRONG) for _ in range(6)] == [401] * 6
    resp = await client.get(SESSION, headers=auth())
    assert resp.status == 429 and resp.headers["Retry-After"] == "1"  # counted in the process: never open
    fell_back = [m for m in warnings(caplog) if "counted in this process only" in m]
    assert len(fell_back) == 1  # said once, not per request
    assert "the blocklist store is unavailable" in fell_back[0]
    assert len(warnings(caplog)) == 7  # and the six failures, each logged as before
    own_redis.start()
    await asyncio.sleep(1.1)  # the in-process closing (1 s) and the pause before asking the store again
    assert await status(client, auth()) == 200
    assert [r.getMessage() for r in caplog.records if "store answers again" in r.getMessage()] == [
        "admin sign-in throttle: the store answers again; failed sign-ins are counted in it again"
    ]


async def test_the_shared_count_answers_as_the_in_process_one(make_config: ConfigFactory) -> None:
    # The same steps as tests/test_security.py's test_back_off_doubles_reopens_and_forgets, on both throttles.
    now = [1_000_000.0]
    local = AuthThrottle(free=2, base_seconds=1, max_seconds=8, forget_seconds=60, clock=lambda: now[0])
    async with open_store(make_config().store) as store:
        shared = AuthFailures(store, free=2, base_ms=1000, max_ms=8000, forget_ms=60_000)

        def now_ms() -> int:
            return int(now[0] * 1000)

        async def both_fail(address: str) -> float:
            closed = local.failed(address)
            assert await shared.failed(address, now_ms()) / 1000 == closed
            return closed

        async def both_closed_for(address: str) -> float:
            try:
                local.check(address)
                expected = 0.0
            except TooManyAttempts:
                expected = local._failures[address].closed_until - now[0]
            closed_ms, _ = await shared.closed_ms(address, now_ms())
            assert closed_ms / 1000 == expected
            return expected

        assert [await both_fail("10.0.0.1") for _ in range(2)] == [0, 0]
        closings = []
        for _ in range(5):
            closings.append(await both_fail("10.0.0.1"))
            assert await both_closed_for("10.0.0.1") == closings[-1]
            now[0] += closings[-1] - 0.5
            assert await both_closed_for("10.0.0.1") == 0.5
            now[0] += 0.5
            assert await both_closed_for("10.0.0.1") == 0
        assert closings == [1, 2, 4, 8, 8]  # doubling, capped
        assert await both_closed_for("10.0.0.2") == 0  # other addresses are not affected
        local.succeeded("10.0.0.1")
        await shared.succeeded("10.0.0.1")
        assert await both_fail("10.0.0.1") == 0  # a success starts the count afresh
        for _ in range(3):
            await both_fail("d")
        assert await both_closed_for("d") == 1
        now[0] += 61
        assert await both_closed_for("d") == 0  # forgotten after a minute (forget_seconds) without failures
        assert await both_fail("d") == 0  # and counted afresh
        assert await shared.closed_ms("d", now_ms()) == (0, True)
