"""The exact local check cache: invalidated across replicas by pub/sub, never stale after a change or an outage."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from proxy.blocklist import Actor, BlocklistService, InboundUser
from proxy.cache import CheckCache
from proxy.config import Config, StoreConfig
from proxy.identity import from_wa_id
from proxy.store import open_store

from conftest import PNID, FakeClock, RedisServer, wrote_recently

USER = from_wa_id("573001234567")


@contextlib.asynccontextmanager
async def replica(
    config: Config, clock: FakeClock, store: StoreConfig | None = None
) -> AsyncIterator[BlocklistService]:
    """One proxy replica's service with its own store client, cache and running subscriber."""
    async with open_store(store or config.store) as opened:
        cache = CheckCache(opened.redis, liveness_seconds=3)
        service = BlocklistService(opened, config, clock, cache=cache)
        task = asyncio.create_task(cache.run())
        try:
            await asyncio.wait_for(cache.subscribed.wait(), 10)
            yield service
        finally:
            cache.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_block_on_one_replica_reaches_the_others_cache(config: Config, clock: FakeClock) -> None:
    async with replica(config, clock) as a, replica(config, clock) as b:
        assert a.cache is not None
        await wrote_recently(b, PNID, USER.value)
        assert not await a.is_blocked(PNID, USER)
        assert not await a.is_blocked(PNID, USER)
        assert a.cache.hits == 1  # the second check was answered locally

        invalidated = asyncio.get_running_loop().create_future()
        a.cache.on_invalidate = lambda pnid: invalidated.done() or invalidated.set_result(pnid)
        await b.block(PNID, USER.value, actor=Actor("supervisor", "test"))
        assert await asyncio.wait_for(invalidated, 5) == PNID
        assert await a.is_blocked(PNID, USER)

        invalidated = asyncio.get_running_loop().create_future()
        await b.unblock(PNID, USER.value, actor=Actor("supervisor", "test"))
        assert await asyncio.wait_for(invalidated, 5) == PNID
        assert not await a.is_blocked(PNID, USER)


async def test_the_replica_that_changes_sees_it_at_once(config: Config, clock: FakeClock) -> None:
    async with replica(config, clock) as a:
        await wrote_recently(a, PNID, USER.value)
        assert not await a.is_blocked(PNID, USER)
        await a.block(PNID, USER.value, actor=Actor("supervisor", "test"))
        assert await a.is_blocked(PNID, USER)  # no wait for the pub/sub message


async def test_a_read_that_raced_with_a_change_is_not_kept(config: Config, clock: FakeClock) -> None:
    async with open_store(config.store) as opened:
        cache = CheckCache(opened.redis)
        cache.enabled = True
        token = cache.token(PNID)
        cache.invalidate(PNID)  # a change arrived while the answer was being read
        cache.put(PNID, [USER.key], None, token)
        assert cache.get(PNID, [USER.key]) == (False, None)
        cache.put(PNID, [USER.key], None, cache.token(PNID))
        assert cache.get(PNID, [USER.key]) == (True, None)
        cache.enabled = False
        assert cache.get(PNID, [USER.key]) == (False, None)


async def test_a_newly_learned_link_invalidates(config: Config, clock: FakeClock) -> None:
    user_id = "CO.linkme1"
    async with replica(config, clock) as a, replica(config, clock) as b:
        assert a.cache is not None
        await b.record_inbound(PNID, [InboundUser(bsuid=user_id)])
        await b.block(PNID, user_id, actor=Actor("supervisor", "test"))
        assert not await a.is_blocked(PNID, USER)  # the number is not known to belong to this user yet
        invalidated = asyncio.get_running_loop().create_future()
        a.cache.on_invalidate = lambda pnid: invalidated.done() or invalidated.set_result(pnid)
        await b.record_inbound(PNID, [InboundUser(wa_id=USER.value, bsuid=user_id)])  # a webhook shows both
        await asyncio.wait_for(invalidated, 5)
        assert await a.is_blocked(PNID, USER)


async def test_an_outage_drops_every_cached_answer(
    config: Config, clock: FakeClock, tmp_path: Path, redis_url: str
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    store = StoreConfig(redis_url=server.url, timeout_seconds=1)
    try:
        async with replica(config, clock, store) as a:
            assert a.cache is not None
            assert not await a.is_blocked(PNID, USER)
            assert a.cache.get(PNID, [USER.key]) == (True, None)
            server.stop()
            await asyncio.wait_for(a.cache.unsubscribed.wait(), 10)
            assert a.cache.get(PNID, [USER.key]) == (False, None)
            server.start()  # same port, empty: a block is made while our subscription was down
            async with open_store(store) as other_store:
                other = BlocklistService(other_store, config, clock)
                await other.block(PNID, USER.value, actor=Actor("supervisor", "test"), force=True)
            assert await a.is_blocked(PNID, USER)  # whether or not the cache is back, the answer is fresh
            await asyncio.wait_for(a.cache.subscribed.wait(), 10)
            assert await a.is_blocked(PNID, USER)
    finally:
        server.stop()
