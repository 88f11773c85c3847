"""The replay guard the webhook receiver uses: a signed body is forwarded once per connector within the window."""

from __future__ import annotations

import asyncio

import pytest

from wa_blocklist.proxy.base.errors import StoreUnavailable
from wa_blocklist.proxy.config import Config
from wa_blocklist.proxy.inbound.replay import Confirmations, ReplayGuard
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


async def test_confirmations_are_written_in_one_batch_and_the_hold_covers_the_wait(config: Config) -> None:
    bodies = [p.encode(p.envelope(p.messages_change(PNID, [p.text("573001234567", f"m{i}")]))) for i in range(3)]
    async with open_store(config.store) as store:
        guard = ReplayGuard(store, window_seconds=900)
        confirmations = Confirmations(store, delay=60)  # written by flush() here, not by the timer
        for body in bodies:
            assert await guard.claim(PNID, body, hold_seconds=40)
            guard.confirm_later(confirmations, PNID, body)
        for body in bodies:  # not written yet: the claims' hold still refuses a replay
            assert 0 < await store.redis.ttl(ReplayGuard.key(PNID, body)) <= 40
            assert not await guard.claim(PNID, body, hold_seconds=40)
        await confirmations.flush()
        for body in bodies:
            assert 40 < await store.redis.ttl(ReplayGuard.key(PNID, body)) <= 900


async def test_confirmations_are_written_after_the_delay_and_at_close(config: Config) -> None:
    first, second = (p.encode(p.envelope(p.messages_change(PNID, [p.text("573001234567", t)]))) for t in "ab")
    async with open_store(config.store) as store:
        guard = ReplayGuard(store, window_seconds=900)
        confirmations = Confirmations(store, delay=0.05)
        assert await guard.claim(PNID, first, hold_seconds=40)
        guard.confirm_later(confirmations, PNID, first)
        for _ in range(100):
            if await store.redis.ttl(ReplayGuard.key(PNID, first)) > 40:
                break
            await asyncio.sleep(0.02)
        assert 40 < await store.redis.ttl(ReplayGuard.key(PNID, first)) <= 900

        slow = Confirmations(store, delay=60)
        assert await guard.claim(PNID, second, hold_seconds=40)
        guard.confirm_later(slow, PNID, second)
        await slow.close()  # shutdown writes what is pending
        assert 40 < await store.redis.ttl(ReplayGuard.key(PNID, second)) <= 900


async def test_a_store_outage_while_confirming_leaves_the_hold_and_raises_nothing(
    own_redis: RedisServer, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    store_config = config.store.__class__(redis_url=own_redis.url, timeout_seconds=0.5)
    async with open_store(store_config) as store:
        guard = ReplayGuard(store)
        confirmations = Confirmations(store, delay=60)
        assert await guard.claim(PNID, b"{}", hold_seconds=40)
        guard.confirm_later(confirmations, PNID, b"{}")
        own_redis.stop()
        await confirmations.flush()  # logged; the claim's hold runs out on its own (a later replay may pass again)
    assert "could not confirm 1 delivered webhook" in caplog.text


async def test_the_recording_script_claims_first_and_a_replay_records_nothing(config: Config) -> None:
    body = p.encode(p.envelope(p.messages_change(PNID, [p.text("573001234567", "una vez")])))
    key = ReplayGuard.key(PNID, body)
    user = ("573001234567", "", True)
    async with open_store(config.store) as store:
        first = await store.record_inbound_detail(
            PNID, [user], 1_000_000, messages=[("wamid.A", 0)], claim=(key, 40_000)
        )
        assert first == [0]
        assert 0 < await store.redis.pttl(key) <= 40_000
        # The same body again (a replay): the script finds the claim and records nothing at all.
        again = await store.record_inbound_detail(
            PNID, [user], 2_000_000, messages=[("wamid.B", 0)], claim=(key, 40_000)
        )
        assert again is None
        assert await store.last_inbound_ms(PNID, "573001234567") == 1_000_000
        assert await store.message_owner(PNID, "wamid.A") is not None
        assert await store.message_owner(PNID, "wamid.B") is None
        # A later webhook's script carries the confirmation of the first one: now it is kept for the window.
        other = ReplayGuard.key(PNID, body + b" ")
        later = await store.record_inbound_detail(PNID, [user], 3_000_000, claim=(other, 40_000), confirm=[(key, 900)])
        assert later == [0]
        assert 40 < await store.redis.ttl(key) <= 900


async def test_the_recording_script_is_loaded_again_when_redis_lost_it(config: Config) -> None:
    # The store runs the script by its SHA; a restarted or flushed Redis answers NOSCRIPT and the script is loaded
    # again, as redis-py's own wrapper does.
    body = p.encode(p.envelope(p.messages_change(PNID, [p.text("573001234567", "otra vez")])))
    async with open_store(config.store) as store:
        await store.redis.script_flush()
        flags = await store.record_inbound_detail(
            PNID, [("573001234567", "", True)], 1_000_000, claim=(ReplayGuard.key(PNID, body), 40_000)
        )
        assert flags == [0]
        assert await store.last_inbound_ms(PNID, "573001234567") == 1_000_000
