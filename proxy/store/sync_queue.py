"""The Meta sync queue's Redis keys and scripts, beside the store's other key schemas.

Per connector, ``wabl:{pnid}:meta_sync`` (hash: match key → pending record, JSON) and ``wabl:{pnid}:meta_sync_due``
(sorted set: match key → next attempt, Unix ms). Only the latest change per user is kept. The keys carry the
store's hash tag ``{pnid}``, so the scripts stay legal on Redis Cluster. The worker that applies the changes at Meta
is :mod:`wa_blocklist.proxy.blocklist.meta_sync`.
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

# KEYS: pending due. ARGV: key now_ms lease_until_ms. Claims one due sync for this worker; returns its record.
_CLAIM = """
local due = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then return false end
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then redis.call('ZREM', KEYS[2], ARGV[1]) return false end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return record
"""

# KEYS: pending due. ARGV: key record_json_as_claimed. Removes the sync only if no newer change replaced it.
_DONE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: pending due. ARGV: key record_json_as_claimed new_record_json next_due_ms. Records a failed attempt.
_FAILED = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 1
"""


def sync_keys(pnid: str) -> list[str]:
    """The queue's two keys for a connector: pending records, and when each is due."""
    return [f"wabl:{{{pnid}}}:meta_sync", f"wabl:{{{pnid}}}:meta_sync_due"]


class SyncQueue:
    """The Meta sync queue over one Redis client."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._claim = client.register_script(_CLAIM)
        self._done = client.register_script(_DONE)
        self._failed = client.register_script(_FAILED)

    async def put(self, pnid: str, key: str, record: str) -> None:
        """Queue a change (replacing an older one for the same user), due at once."""
        pending, due = sync_keys(pnid)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(pending, key, record)
            pipe.zadd(due, {key: 0})  # due at once, whatever the clock of the process that applies it
            await pipe.execute()

    async def pending(self, pnid: str) -> dict[str, dict[str, Any]]:
        """Every change still waiting: match key → record, with ``next_attempt_ms``."""
        pending, due = sync_keys(pnid)
        records = await self.redis.hgetall(pending)
        out: dict[str, dict[str, Any]] = {}
        for key, raw in records.items():
            record = json.loads(raw)
            score = await self.redis.zscore(due, key)
            record["next_attempt_ms"] = int(score) if score is not None else None
            out[str(key)] = record
        return out

    async def due(self, pnid: str, now_ms: int, limit: int = 100) -> list[str]:
        """Match keys of the changes due now, at most ``limit``."""
        _, due = sync_keys(pnid)
        return [str(key) for key in await self.redis.zrangebyscore(due, "-inf", now_ms, start=0, num=limit)]

    async def claim(self, pnid: str, key: str, now_ms: int, lease_until_ms: int) -> str | None:
        """Take a due change for this worker until ``lease_until_ms``; its record, or None if it is not due."""
        raw = await self._claim(keys=sync_keys(pnid), args=[key, now_ms, lease_until_ms])
        return str(raw) if raw else None

    async def done(self, pnid: str, key: str, raw: str) -> None:
        """Remove a change applied at Meta, unless a newer change replaced it meanwhile."""
        await self._done(keys=sync_keys(pnid), args=[key, raw])

    async def failed(self, pnid: str, key: str, raw: str, record: str, next_due_ms: int) -> None:
        """Record a failed attempt and when to try again, unless a newer change replaced it meanwhile."""
        await self._failed(keys=sync_keys(pnid), args=[key, raw, record, next_due_ms])
