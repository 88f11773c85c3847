"""Replayed webhooks: the same signed body delivered twice to a connector is forwarded once.

A captured webhook with a valid ``X-Hub-Signature-256`` stays valid forever (the signature covers the body only, and
Meta's bodies carry no nonce the receiver could check), so anyone who saw one can replay it, and every replay would
reach the contact center again (a message shown twice, a bot answering twice, activity recorded again). Meta itself
resends a body only when the earlier delivery was not acknowledged with a 200.

:class:`ReplayGuard` remembers the SHA-256 of every body delivered to a connector for ``window_seconds`` (default one
hour), in Redis under the connector's hash tag, so every replica and worker shares it:

1. :meth:`ReplayGuard.claim` before forwarding: True for a body not seen in the window (it is now claimed); False for
   a replay, which the receiver acknowledges (200, so Meta does not retry) without forwarding it. The receiver claims
   for a short ``hold`` (the delivery's own time bound), not the whole window:
2. :meth:`ReplayGuard.confirm` once every contact center accepted the body: now it is remembered for the window.
3. :meth:`ReplayGuard.release` when the delivery failed and the receiver answers 5xx: Meta's retry of that body must
   go through, so the claim is dropped. Should the store fail right then, the short hold still runs out before Meta
   retries, so a failure can at worst let a duplicate through, never swallow a retry.

The window bounds memory (one small key per delivered webhook); a replay after the window is forwarded again. A
connector may turn the guard off (``webhooks.deduplicate_replays: false``).
"""

from __future__ import annotations

import hashlib

from ..store.blocks import BlocklistStore

DEFAULT_WINDOW_SECONDS = 3600
"""How long a delivered body is remembered."""


class ReplayGuard:
    """Per-connector memory of delivered webhook bodies (see the module docstring).

    Args:
        store: the blocklist store (its Redis client and error mapping are used).
        window_seconds: how long a delivered body is remembered.
    """

    def __init__(self, store: BlocklistStore, window_seconds: int = DEFAULT_WINDOW_SECONDS) -> None:
        self.store = store
        self.window_seconds = window_seconds

    @staticmethod
    def key(pnid: str, body: bytes) -> str:
        """The Redis key remembering ``body`` for connector ``pnid`` (in the connector's hash slot)."""
        return f"wabl:{{{pnid}}}:delivered:{hashlib.sha256(body).hexdigest()}"

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
            self.store.redis.set(self.key(pnid, body), "1", nx=True, ex=hold_seconds or self.window_seconds)
        )
        return bool(claimed)

    async def confirm(self, pnid: str, body: bytes) -> None:
        """Remember a delivered body for the whole window (after a claim with a short hold)."""
        await self.store._call(self.store.redis.expire(self.key(pnid, body), self.window_seconds))

    async def release(self, pnid: str, body: bytes) -> None:
        """Forget a claim whose delivery failed, so Meta's retry of the same body is forwarded."""
        await self.store._call(self.store.redis.delete(self.key(pnid, body)))
