"""Replayed webhooks: the same signed body delivered twice to a connector is forwarded once.

A captured webhook with a valid ``X-Hub-Signature-256`` stays valid forever (the signature covers the body only, and
Meta's bodies carry no nonce the receiver could check), so anyone who saw one can replay it, and every replay would
reach the contact center again (a message shown twice, a bot answering twice, activity recorded again). Meta itself
resends a body only when the earlier delivery was not acknowledged with a 200.

:class:`ReplayGuard` remembers the SHA-256 of every body delivered to a connector for ``window_seconds`` (default one
hour), in Redis under the connector's hash tag, so every replica and worker shares it:

1. :meth:`ReplayGuard.claim` before forwarding: True for a body not seen in the window (it is now claimed); False for
   a replay, which the receiver acknowledges (200, so Meta does not retry) without forwarding it. The receiver claims
   for a short ``hold`` (the delivery's own time bound), not the whole window. When the body has users to record (one
   connector), the claim is made by the very script that records them
   (:meth:`wa_blocklist.proxy.store.blocks.BlocklistStore.record_inbound_detail` with ``claim``): atomically before
   anything is recorded, so a replay still teaches nothing, in the webhook's one round trip;
2. :meth:`ReplayGuard.confirm` once every contact center accepted the body: now it is remembered for the window. The
   receiver does not wait for it: :class:`Confirmations` hands them to the next webhook's script for the same
   connector, or writes those still pending in one pipeline at most ``delay`` (a fraction of a second) after each;
   until then the claim's hold, which is far longer, still refuses a replay. A batch lost to a crash or a store fault
   leaves those holds to run out: a later replay may then
   be forwarded again (a duplicate, as at least once allows), nothing is swallowed.
3. :meth:`ReplayGuard.release` when the delivery failed and the receiver answers 5xx: Meta's retry of that body must
   go through, so the claim is dropped. Should the store fail right then, the short hold still runs out before Meta
   retries, so a failure can at worst let a duplicate through, never swallow a retry.

The window bounds memory (one small key per delivered webhook); a replay after the window is forwarded again. A
connector may turn the guard off (``webhooks.deduplicate_replays: false``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from ..base.errors import StoreUnavailable
from ..store.blocks import BlocklistStore

log = logging.getLogger(__name__)

DEFAULT_WINDOW_SECONDS = 3600
"""How long a delivered body is remembered."""

CONFIRM_DELAY_SECONDS = 0.25
"""Longest wait before a delivered body's confirmation is written (:class:`Confirmations`); far below any hold."""


class ReplayGuard:
    """Per-connector memory of delivered webhook bodies (see the module docstring).

    Args:
        store: the blocklist store (its Redis client and error mapping are used).
        window_seconds: how long a delivered body is remembered.
    """

    def __init__(self, store: BlocklistStore, window_seconds: int = DEFAULT_WINDOW_SECONDS) -> None:
        self.store = store
        self.window_seconds = window_seconds
        self._last: tuple[str, bytes, str] = ("", b"", "")  # the last key worked out: claim, then confirm or release

    def key_of(self, pnid: str, body: bytes) -> str:
        """:meth:`key`, worked out once for the body a request claims, confirms or releases."""
        pnid_, body_, key = self._last
        if body is not body_ or pnid != pnid_:
            key = self.key(pnid, body)
            self._last = (pnid, body, key)
        return key

    @staticmethod
    def key(pnid: str, body: bytes) -> str:
        """The Redis key remembering ``body`` for connector ``pnid`` (in the connector's hash slot)."""
        return f"wabl:{{{pnid}}}:delivered:{hashlib.sha256(body).hexdigest()}"

    def confirm_later(self, confirmations: Confirmations, pnid: str, body: bytes) -> None:
        """:meth:`confirm`, written with others in ``confirmations``' next batch (the caller does not wait)."""
        confirmations.add(pnid, self.key_of(pnid, body), self.window_seconds)

    async def claim(self, pnid: str, body: bytes, hold_seconds: int | None = None) -> bool:
        """True when ``body`` was not delivered to ``pnid`` within the window (and is now claimed); False for a replay.

        Args:
            pnid: the connector (or another name for the body's destination), the key's hash tag.
            body: the raw signed body.
            hold_seconds: how long the claim holds before :meth:`confirm`; the whole window when None.

        Raises:
            StoreUnavailable: Redis is down (the receiver defers the webhook, as for any store failure).
        """
        claimed = await self.store._call(
            self.store.redis.set(self.key_of(pnid, body), "1", nx=True, ex=hold_seconds or self.window_seconds)
        )
        return bool(claimed)

    async def confirm(self, pnid: str, body: bytes) -> None:
        """Remember a delivered body for the whole window (after a claim with a short hold)."""
        await self.store._call(self.store.redis.expire(self.key_of(pnid, body), self.window_seconds))

    async def release(self, pnid: str, body: bytes) -> None:
        """Forget a claim whose delivery failed, so Meta's retry of the same body is forwarded."""
        await self.store._call(self.store.redis.delete(self.key_of(pnid, body)))


class Confirmations:
    """Confirmations of delivered bodies (:meth:`ReplayGuard.confirm_later`), written off the deliveries' path: the
    receiver hands a connector's pending ones to its next recording script (:meth:`take`, no round trip of their own);
    what is still pending ``delay`` after the first is written in one pipeline.

    A confirmed body stays claimed by its hold until its batch is written, so a replay in between is refused as
    before. A batch that fails (store down) or never runs (a crash) leaves those holds to run out: a later replay may
    then be forwarded again, nothing is swallowed (see the module docstring). :meth:`close` writes what is pending.

    Args:
        store: the blocklist store (its Redis client and error mapping are used).
        delay: longest wait before a confirmation is written; keep it far below the claims' hold.
    """

    def __init__(self, store: BlocklistStore, delay: float = CONFIRM_DELAY_SECONDS) -> None:
        self.store = store
        self.delay = delay
        self._pending: dict[str, dict[str, int]] = {}  # connector -> key -> window in seconds
        self._waiting: asyncio.Task[None] | None = None  # the batch being gathered
        self._tasks: set[asyncio.Task[None]] = set()  # strong references until each batch is written

    def add(self, pnid: str, key: str, window_seconds: int) -> None:
        """Remember ``key`` (of connector ``pnid``) for ``window_seconds``, in the next batch."""
        self._pending.setdefault(pnid, {})[key] = window_seconds
        if self._waiting is None:
            self._waiting = task = asyncio.get_running_loop().create_task(self._write_later())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def take(self, pnid: str) -> list[tuple[str, int]]:
        """The pending ``(key, window)`` confirmations of connector ``pnid``, now the caller's to write (with
        :meth:`wa_blocklist.proxy.store.blocks.BlocklistStore.record_inbound_detail`'s ``confirm``); give them back with
        :meth:`restore` if that fails."""
        return list(self._pending.pop(pnid, {}).items())

    def restore(self, pnid: str, taken: list[tuple[str, int]]) -> None:
        """Pending again: confirmations :meth:`take` gave out that could not be written."""
        for key, window in taken:
            self.add(pnid, key, window)

    async def _write_later(self) -> None:
        try:
            await asyncio.sleep(self.delay)
        finally:
            self._waiting = None  # confirmations added from now on go in the next batch
        await self.flush()

    async def flush(self) -> None:
        """Write every pending confirmation now (one pipeline); a fault is logged, not raised."""
        batch = [item for pending in self._pending.values() for item in pending.items()]
        self._pending = {}
        if not batch:
            return

        async def write() -> None:
            async with self.store.redis.pipeline(transaction=False) as pipe:
                for key, window in batch:
                    pipe.expire(key, window)
                await pipe.execute()

        try:
            await self.store._call(write())
        except StoreUnavailable:
            log.warning(
                "could not confirm %d delivered webhook(s) for de-duplication; their claims expire on their own",
                len(batch),
            )
        except Exception:  # a background batch has nobody to raise to; the claims expire on their own
            log.exception("confirming %d delivered webhook(s) for de-duplication failed", len(batch))

    async def close(self) -> None:
        """Write what is pending and wait for batches being written (at shutdown, while the store is open)."""
        if self._waiting is not None:
            self._waiting.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.flush()
