"""The replay guard the webhook receiver uses: a signed body is forwarded once per connector within the window."""

from __future__ import annotations

import pytest

from wa_blocklist.proxy.base.errors import StoreUnavailable
from wa_blocklist.proxy.config import Config
from wa_blocklist.proxy.inbound.replay import ReplayGuard
from wa_blocklist.proxy.store.client import open_store

import payloads as p
from support import PNID, PNID_BR, RedisServer


async def test_a_body_is_claimed_once_per_connector_across_replicas(config: Config) -> None:
    body = p.encode(p.envelope(p.messages_change(PNID, [p.text("573001234567")])))
    async with open_store(config.store) as one, open_store(config.store) as other:
        a, b = ReplayGuard(one, window_seconds=600), ReplayGuard(other, window_seconds=600)
        assert await a.claim(PNID, body)
        assert not await b.claim(PNID, body)  # the replay reaches another replica: still a replay
        assert not await a.claim(PNID, body)
        assert await a.claim(PNID_BR, body)  # per connector
        assert await a.claim(PNID, body + b" ")  # another body (the signature would differ too)
        ttl = await one.redis.ttl(ReplayGuard.key(PNID, body))
        assert 0 < ttl <= 600  # remembered for the window only

        # A delivery that failed is released, so Meta's retry of the same body goes through.
        await b.release(PNID, body)
        assert await b.claim(PNID, body)


async def test_a_store_outage_is_a_store_error(own_redis: RedisServer, config: Config) -> None:
    store_config = config.store.__class__(redis_url=own_redis.url, timeout_seconds=0.5)
    async with open_store(store_config) as store:
        guard = ReplayGuard(store)
        assert await guard.claim(PNID, b"{}")
        own_redis.stop()
        with pytest.raises(StoreUnavailable):
            await guard.claim(PNID, b"{}")


async def test_a_short_claim_lasts_the_window_once_confirmed(config: Config) -> None:
    body = p.encode(p.envelope(p.messages_change(PNID, [p.text("573001234567")])))
    async with open_store(config.store) as store:
        guard = ReplayGuard(store, window_seconds=900)
        assert await guard.claim(PNID, body, hold_seconds=40)
        assert 0 < await store.redis.ttl(ReplayGuard.key(PNID, body)) <= 40
        assert not await guard.claim(PNID, body, hold_seconds=40)  # held while the first delivery runs
        await guard.confirm(PNID, body)
        assert 40 < await store.redis.ttl(ReplayGuard.key(PNID, body)) <= 900
