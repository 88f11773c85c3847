"""The exact local check cache: invalidated across replicas by pub/sub, never stale after a change or an outage."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from relay import Relay

from wa_blocklist.proxy.blocklist.service import Actor, BlocklistService, InboundUser
from wa_blocklist.proxy.config import Config, StoreConfig
from wa_blocklist.proxy.graph.identity import from_wa_id
from wa_blocklist.proxy.store.cache import MAX_STALENESS_SECONDS, CheckCache
from wa_blocklist.proxy.store.client import open_store

from support import PNID, FakeClock, RedisServer, wrote_recently

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
        cache = CheckCache(opened.redis, clock=lambda: 100.0)
        cache.enabled = True
        cache.current_as_of = 100.0  # as if a heartbeat had just come back
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


async def test_a_frozen_subscription_serves_no_cached_answer_older_than_the_bound(
    config: Config, clock: FakeClock, redis_url: str, record_property: Any
) -> None:
    """The subscriber's connection stops delivering without closing (a frozen NAT flow): within the bound, the
    replica stops trusting what it cached and asks Redis, so a block made elsewhere is enforced in time."""
    async with (
        Relay(redis_url) as relay,
        open_store(config.store) as direct,
        open_store(StoreConfig(redis_url=relay.url)) as relayed,
    ):
        cache = CheckCache(relayed.redis, liveness_seconds=60)  # no help from the liveness check: it is far off
        a = BlocklistService(direct, config, clock, cache=cache)
        b = BlocklistService(direct, config, clock)
        task = asyncio.create_task(cache.run())
        try:
            await asyncio.wait_for(cache.subscribed.wait(), 10)
            await wrote_recently(b, PNID, USER.value)
            assert not await a.is_blocked(PNID, USER)
            hits = cache.hits
            assert not await a.is_blocked(PNID, USER)
            assert cache.hits == hits + 1  # "not blocked" is now served from the cache

            assert relay.freeze(lambda c: c.subscriber) == 1
            await b.block(PNID, USER.value, actor=Actor("supervisor", "test"))
            blocked_at = last_stale = time.monotonic()
            stale_answers = 0
            while not await a.is_blocked(PNID, USER):  # a cached answer is returned without yielding to the loop
                last_stale = time.monotonic()
                stale_answers += 1
                assert last_stale - blocked_at < 5, "the frozen replica kept its stale answer"
                await asyncio.sleep(0.005)  # measuring how long the stale answer lasts, not waiting for an event
            staleness = last_stale - blocked_at
            assert staleness <= MAX_STALENESS_SECONDS
            assert cache.enabled and not cache.current and cache.stale_checks > 0  # subscribed, just not trusted
            assert await a.is_blocked(PNID, USER)

            relay.thaw()  # what was held back arrives in order; the heartbeats prove the channel current again
            await asyncio.wait_for(cache.subscribed.wait(), 10)
            hits = cache.hits
            assert await a.is_blocked(PNID, USER) and await a.is_blocked(PNID, USER)
            assert cache.hits >= hits  # a temporary block's "blocked" is never cached; a permanent one may be
        finally:
            cache.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    record_property("frozen_subscription_staleness_s", round(staleness, 3))
    print(f"\nstale 'not blocked' served for {staleness * 1000:.0f} ms ({stale_answers} checks) under a frozen channel")
