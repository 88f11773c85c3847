"""An exact local cache of blocklist check answers, kept right by Redis pub/sub invalidation.

Checking a send costs a Redis round trip; most sends go to users who are not blocked and whose answer does not change
between two sends. This cache remembers answers per connector and forgets a connector's answers as soon as anything
that could change them happens anywhere: every block, unblock and newly learned wa_id↔BSUID link publishes the
connector's ID on :data:`~proxy.store.INVALIDATION_CHANNEL` inside the same Lua script that makes the change.

Why it cannot serve a stale "not blocked":
- answers are cached only while the subscription is confirmed; when the subscription breaks, everything is dropped and
  nothing is cached until it is confirmed again (messages published meanwhile cannot be missed that way);
- an answer read from Redis is stored only if no invalidation for its connector arrived while it was being read
  (a generation counter per connector), so a read that raced with a change is never kept;
- the process that makes a change drops its own answers at once, without waiting for the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from .store import INVALIDATION_CHANNEL

log = logging.getLogger(__name__)

_MISSING = object()


class CheckCache:
    """Per-connector memo of ``first_blocked`` answers.

    Args:
        client: the store's Redis client (its pool provides the subscriber connection).
        max_entries: answers kept per connector before that connector's memo is started afresh.
        liveness_seconds: a subscription with no traffic (messages or our pings' answers) for this long is treated as
            broken.
    """

    def __init__(self, client: aioredis.Redis, max_entries: int = 100_000, liveness_seconds: float = 10.0) -> None:
        self.client = client
        self.max_entries = max_entries
        self.liveness_seconds = liveness_seconds
        self.enabled = False
        self.subscribed = asyncio.Event()
        self.unsubscribed = asyncio.Event()
        self.unsubscribed.set()
        self._answers: dict[str, dict[tuple[str, ...], str | None]] = {}
        self._generation: dict[str, int] = {}
        self._epoch = 0
        self.hits = 0
        self.misses = 0
        self._stopping = False
        self.on_invalidate: Callable[[str], None] | None = None
        """Called with the connector ID after each invalidation message (metrics, tests)."""

    def get(self, pnid: str, keys: Sequence[str]) -> tuple[bool, str | None]:
        """``(True, answer)`` when a valid answer is cached, else ``(False, None)``."""
        if not self.enabled:
            return False, None
        found = self._answers.get(pnid, {}).get(tuple(keys), _MISSING)
        if found is _MISSING:
            self.misses += 1
            return False, None
        self.hits += 1
        return True, found  # type: ignore[return-value]

    def token(self, pnid: str) -> tuple[int, int]:
        """Take before reading Redis; pass to :meth:`put` so a read that raced with a change is not kept."""
        return self._epoch, self._generation.get(pnid, 0)

    def put(self, pnid: str, keys: Sequence[str], answer: str | None, token: tuple[int, int]) -> None:
        if not self.enabled or token != self.token(pnid):
            return
        answers = self._answers.setdefault(pnid, {})
        if len(answers) >= self.max_entries:
            answers.clear()
        answers[tuple(keys)] = answer

    def invalidate(self, pnid: str) -> None:
        """Forget every answer of one connector."""
        self._generation[pnid] = self._generation.get(pnid, 0) + 1
        self._answers.pop(pnid, None)

    def invalidate_all(self) -> None:
        self._epoch += 1
        self._answers.clear()

    def _suspend(self) -> None:
        self.enabled = False
        self.subscribed.clear()
        self.unsubscribed.set()
        self.invalidate_all()

    def stop(self) -> None:
        """Make :meth:`run` return within a second, even if a cancellation is swallowed by a client timeout."""
        self._stopping = True
        self._suspend()

    async def run(self) -> None:
        """Keep the subscription alive (reconnecting with backoff) until :meth:`stop` or cancellation."""
        delay = 0.05
        while not self._stopping:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(INVALIDATION_CHANNEL)
                last_traffic = time.monotonic()
                last_ping = last_traffic
                while not self._stopping:
                    message = await pubsub.get_message(timeout=1.0)
                    now = time.monotonic()
                    if message is not None:
                        last_traffic = now
                        kind = message["type"]
                        if kind == "subscribe" and not self._stopping:
                            self.invalidate_all()
                            self.enabled = True
                            self.unsubscribed.clear()
                            self.subscribed.set()
                            delay = 0.05
                        elif kind == "message":
                            pnid = str(message["data"])
                            self.invalidate(pnid)
                            if self.on_invalidate is not None:
                                self.on_invalidate(pnid)
                    if now - last_ping >= self.liveness_seconds / 3:
                        await pubsub.ping()
                        last_ping = now
                    if now - last_traffic > self.liveness_seconds:
                        raise redis_errors.TimeoutError("invalidation subscription went silent")
            except asyncio.CancelledError:
                self._suspend()
                raise
            except (redis_errors.RedisError, OSError) as exc:
                if self.enabled:
                    log.warning("check cache off until Redis pub/sub is back (%s)", type(exc).__name__)
                self._suspend()
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            if not self._stopping:
                await asyncio.sleep(delay)  # reconnect backoff
                delay = min(delay * 2, 2.0)
        self._suspend()
