"""An exact local cache of blocklist check answers, kept right by Redis pub/sub invalidation.

Checking a send costs a Redis round trip; most sends go to users who are not blocked and whose answer does not change
between two sends. This cache remembers answers per connector and forgets a connector's answers as soon as anything
that could change them happens anywhere: every block, unblock and newly learned wa_id↔BSUID link publishes the
connector's ID on :data:`~proxy.store.schema.INVALIDATION_CHANNEL` inside the same Lua script that makes the change.

Why it cannot serve a stale "not blocked":
- answers are cached only while the subscription is confirmed; when the subscription breaks, everything is dropped and
  nothing is cached until it is confirmed again (messages published meanwhile cannot be missed that way);
- an answer read from Redis is stored only if no invalidation for its connector arrived while it was being read
  (a generation counter per connector), so a read that raced with a change is never kept;
- the process that makes a change drops its own answers at once, without waiting for the message.

Bounded staleness, even when the subscription stalls without breaking (a NAT or firewall flow that silently stops
forwarding, a Redis output buffer stuck behind a slow network): the subscriber publishes a heartbeat on its
own channel every :data:`HEARTBEAT_SECONDS` and is subscribed to it on the same connection as the invalidations.
Redis delivers a subscriber's messages in the order they were published; so when a heartbeat sent at time *t* comes
back, every change committed before *t* has already been applied here (in a Cluster, one heartbeat per primary, since
each origin node's messages are ordered separately). Cached answers are served only while the last such *t* is at
most :data:`MAX_STALENESS_SECONDS` old; beyond that every check goes to Redis (and is counted as a miss) until a
heartbeat comes back. A cached "not blocked" is therefore never older than that bound: a block is refused by every
replica and worker at most :data:`MAX_STALENESS_SECONDS` after it was made, whatever happens to the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster

from .schema import INVALIDATION_CHANNEL

log = logging.getLogger(__name__)

_MISSING = object()

MAX_STALENESS_SECONDS = 1.0
"""Cached answers are served only while the invalidation channel is proven to have delivered every change made up to
this long ago (see the module docstring)."""
HEARTBEAT_SECONDS = 0.25
"""How often a heartbeat is published; a quarter of the bound leaves room for a busy event loop."""


class CheckCache:
    """Per-connector memo of ``first_blocked`` answers.

    Args:
        client: the store's Redis client (its pool provides the subscriber connection).
        max_entries: answers kept per connector before that connector's memo is started afresh.
        liveness_seconds: a subscription with no traffic (messages or our pings' answers) for this long is treated as
            broken, and reconnected.
        max_staleness_seconds: cached answers are served only while the subscription is proven current up to this
            long ago (:data:`MAX_STALENESS_SECONDS`).
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        max_entries: int = 100_000,
        liveness_seconds: float = 10.0,
        max_staleness_seconds: float = MAX_STALENESS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.max_entries = max_entries
        self.liveness_seconds = liveness_seconds
        self.max_staleness_seconds = max_staleness_seconds
        self.heartbeat_seconds = min(HEARTBEAT_SECONDS, max_staleness_seconds / 4)
        self.clock = clock
        self.current_as_of = float("-inf")
        """When the last heartbeat that came back was sent: every change committed before it has been applied."""
        self.heartbeat_channel = f"{INVALIDATION_CHANNEL}:heartbeat:{secrets.token_hex(8)}"
        """This subscriber's own channel: its heartbeats come back on the subscription they prove current."""
        self.stale_checks = 0
        """Checks that found an answer cached but could not trust it (the subscription not proven current)."""
        self.enabled = False
        self.subscribed = asyncio.Event()
        """Set while the subscription is confirmed and proven current by a heartbeat (cleared when it breaks, or when
        a check finds it not proven current)."""
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
        if self.clock() - self.current_as_of > self.max_staleness_seconds:
            self.stale_checks += 1  # kept: it is right again once the channel is proven current
            self.subscribed.clear()  # set again by the next heartbeat that comes back
            self.misses += 1
            return False, None
        self.hits += 1
        return True, found  # type: ignore[return-value]

    @property
    def current(self) -> bool:
        """Whether cached answers may be served now (the subscription is proven current within the bound)."""
        return self.enabled and self.clock() - self.current_as_of <= self.max_staleness_seconds

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
        self.current_as_of = float("-inf")
        self.subscribed.clear()
        self.unsubscribed.set()
        self.invalidate_all()

    def _heartbeat_nodes(self) -> list[Any]:
        # In a Cluster, an invalidation travels from the node that ran the change to the node we are subscribed on
        # over the cluster bus, in order per origin node: one heartbeat from every primary covers every origin.
        if isinstance(self.client, RedisCluster):
            return list(self.client.get_primaries())
        return [None]

    async def _send_heartbeat(self, sequence: int, nodes: list[Any]) -> None:
        sends = []
        for index, node in enumerate(nodes):
            options = {"target_nodes": node} if node is not None else {}
            sends.append(self.client.publish(self.heartbeat_channel, f"{sequence}:{index}", **options))
        await asyncio.gather(*sends)

    def _heartbeat_back(self, beats: dict[int, _Beat], data: str) -> None:
        sequence, _, index = data.partition(":")
        beat = beats.get(int(sequence)) if sequence.isdigit() else None
        if beat is None or not self.enabled:
            return
        beat.received.add(index)
        if len(beat.received) < beat.expected:
            return
        # Every change committed before this heartbeat was sent has reached us (and been applied) before it.
        self.current_as_of = max(self.current_as_of, beat.sent)
        self.subscribed.set()
        for seq in [seq for seq in beats if seq <= int(sequence)]:
            del beats[seq]

    def stop(self) -> None:
        """Make :meth:`run` return within a second, even if a cancellation is swallowed by a client timeout."""
        self._stopping = True
        self._suspend()

    async def run(self) -> None:
        """Keep the subscription alive (reconnecting with backoff) until :meth:`stop` or cancellation."""
        delay = 0.05
        while not self._stopping:
            pubsub = self.client.pubsub()
            beats: dict[int, _Beat] = {}
            sequence = 0
            sending: asyncio.Task[None] | None = None
            try:
                await pubsub.subscribe(INVALIDATION_CHANNEL, self.heartbeat_channel)
                last_traffic = self.clock()
                last_beat = float("-inf")
                while not self._stopping:
                    message = await pubsub.get_message(timeout=self.heartbeat_seconds)
                    now = self.clock()
                    if message is not None:
                        last_traffic = now
                        kind = message["type"]
                        if kind == "subscribe" and not self._stopping:
                            if not self.enabled:
                                self.invalidate_all()
                                self.enabled = True
                                self.unsubscribed.clear()
                                delay = 0.05
                        elif kind == "message" and _text(message["channel"]) == self.heartbeat_channel:
                            self._heartbeat_back(beats, _text(message["data"]))
                        elif kind == "message":
                            pnid = _text(message["data"])
                            self.invalidate(pnid)
                            if self.on_invalidate is not None:
                                self.on_invalidate(pnid)
                    if now - last_beat >= self.heartbeat_seconds and (sending is None or sending.done()):
                        if sending is not None and not sending.cancelled() and sending.exception() is not None:
                            raise sending.exception()  # type: ignore[misc]
                        sequence += 1
                        nodes = self._heartbeat_nodes()
                        beats[sequence] = _Beat(sent=now, expected=len(nodes))
                        sending = asyncio.ensure_future(self._send_heartbeat(sequence, nodes))
                        last_beat = now
                        for old in [seq for seq in beats if seq < sequence - 1000]:
                            del beats[old]  # never answered: the liveness check below reconnects
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
                if sending is not None and not sending.done():
                    sending.cancel()
                    # let the heartbeat's publishes settle before the client closes: one caught mid-connect would
                    # otherwise open a connection after the pool's last disconnect and leave its socket unclosed
                    await asyncio.wait([sending])
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            if not self._stopping:
                await asyncio.sleep(delay)  # reconnect backoff
                delay = min(delay * 2, 2.0)
        self._suspend()


@dataclass
class _Beat:
    sent: float
    expected: int
    received: set[str] = field(default_factory=set)


def _text(data: object) -> str:
    return data.decode() if isinstance(data, bytes) else str(data)
