"""Failed admin sign-ins per client address, kept in the store so every worker, replica and restart sees one count.

One hash per address, ``wabl:auth:{<address>}`` (the whole address is the hash tag: one key, one Redis Cluster
slot), with ``count`` (failures in a row), ``last`` (the latest failure) and ``until`` (closed until), all Unix ms
of the caller's clock. Each failure gives the key a fresh expiry of ``forget_ms``, so an address that stops failing
leaves nothing behind. The rules (free failures, doubling closings, forgetting) are
:class:`wa_blocklist.proxy.admin.auth.AuthThrottle`'s, applied here atomically:

1. :meth:`AuthFailures.closed_ms` reads ``last`` and ``until`` (one HMGET) and answers how long the address is
   still closed.
2. :meth:`AuthFailures.failed` counts a failure in one Lua script (read, count, close, expire), so failures arriving
   at several replicas at once are all counted.
3. :meth:`AuthFailures.succeeded` deletes the key: the address is open again everywhere.

Redis errors become :class:`~wa_blocklist.proxy.base.errors.StoreUnavailable` in the store's one place
(:meth:`BlocklistStore._call`); the admin app then counts in its own process until the store answers again.
"""

from __future__ import annotations

from typing import Any

from .blocks import BlocklistStore

# KEYS: the address's key. ARGV: now_ms free base_ms max_ms forget_ms. Returns how long the address is now closed
# (ms; 0 while failures are still free). A key whose last failure is older than forget_ms starts afresh.
FAILED = """
local now = tonumber(ARGV[1])
local free = tonumber(ARGV[2])
local forget = tonumber(ARGV[5])
local seen = redis.call('HMGET', KEYS[1], 'count', 'last')
local count = tonumber(seen[1]) or 0
local last = tonumber(seen[2])
if last == nil or now - last > forget then
  count = 0
  redis.call('DEL', KEYS[1])
end
count = count + 1
local closed = 0
if count > free then
  closed = math.floor(math.min(tonumber(ARGV[3]) * 2 ^ (count - free - 1), tonumber(ARGV[4])))
  redis.call('HSET', KEYS[1], 'count', count, 'last', ARGV[1], 'until', string.format('%.0f', now + closed))
else
  redis.call('HSET', KEYS[1], 'count', count, 'last', ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], forget)
return closed
"""


def auth_key(address: str) -> str:
    """The key counting the failed sign-ins of one client address."""
    return f"wabl:auth:{{{address}}}"


class AuthFailures:
    """Failed sign-ins per client address in one store (see the module docstring).

    Args:
        store: the blocklist store (its client, and its one mapping of Redis errors).
        free: failures allowed before the address is closed.
        base_ms: how long the first closing lasts; each further failure doubles it.
        max_ms: the longest closing.
        forget_ms: an address with no failure for this long starts afresh (and its key expires).
    """

    def __init__(self, store: BlocklistStore, *, free: int, base_ms: int, max_ms: int, forget_ms: int) -> None:
        self.store = store
        self._args = (free, base_ms, max_ms, forget_ms)
        self.forget_ms = forget_ms
        self._failed = store.redis.register_script(FAILED)

    async def closed_ms(self, address: str, now_ms: int) -> tuple[int, bool]:
        """How long ``address`` is still closed at ``now_ms`` (0: open), and whether it has failures on record.

        Raises:
            StoreUnavailable: Redis is down or did not answer in time.
        """
        last, until = await self.store._call(self.store.redis.hmget(auth_key(address), "last", "until"))
        if last is None or now_ms - int(last) > self.forget_ms:
            return 0, False
        return max(0, int(until or 0) - now_ms), True

    async def failed(self, address: str, now_ms: int) -> int:
        """Count a failure at ``now_ms``; how long the address is now closed (ms; 0 while failures are free).

        Raises:
            StoreUnavailable: Redis is down or did not answer in time.
        """
        closed: Any = await self.store._call(self._failed(keys=[auth_key(address)], args=[now_ms, *self._args]))
        return int(closed)

    async def succeeded(self, address: str) -> None:
        """Reopen ``address`` for every process (a successful sign-in).

        Raises:
            StoreUnavailable: Redis is down or did not answer in time.
        """
        await self.store._call(self.store.redis.delete(auth_key(address)))
