"""Calls the proxy itself makes to Meta's Graph API (not the pass-through), with a connector's access token,
and the sync of blocklist changes to Meta's own blocklist (:class:`MetaSync`)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
from typing import Any, Literal

import aiohttp
from redis import exceptions as redis_errors

from ..base.errors import StoreUnavailable
from ..config import Config, ConnectorConfig, GraphConfig, LiveConfig, live
from ..store.blocks import BlocklistStore
from ..store.schema import BlockEntry
from ..store.sync_queue import SyncQueue
from .service import BlocklistService, Clock

log = logging.getLogger(__name__)


class MetaError(Exception):
    """Meta answered with an error, or could not be reached. ``status`` is 0 when nothing was answered."""

    def __init__(self, status: int, body: Any, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class MetaClient:
    """A thin client over the shared Graph session.

    Args:
        session: the app's pooled Graph session.
        graph: where the Graph API is and which version to call.
    """

    def __init__(self, session: aiohttp.ClientSession, graph: GraphConfig) -> None:
        self.session = session
        self.graph = graph

    def url(self, pnid: str, edge: str) -> str:
        return f"{self.graph.base_url}/{self.graph.api_version}/{pnid}/{edge}"

    async def request(
        self,
        method: str,
        connector: ConnectorConfig,
        edge: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """Send one request with the connector's token; returns ``(status, parsed JSON or None)``.

        Raises:
            MetaError: if the connector has no access token or Meta cannot be reached (status 0).
        """
        if not connector.access_token:
            raise MetaError(0, None, f"connector {connector.phone_number_id} has no access_token configured")
        headers = {"Authorization": f"Bearer {connector.access_token}"}
        try:
            async with self.session.request(
                method,
                self.url(connector.phone_number_id, edge),
                json=body,
                params=params,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.graph.timeout_seconds),
            ) as resp:
                raw = await resp.read()
                try:
                    parsed = json.loads(raw) if raw else None
                except ValueError:
                    parsed = None
                return resp.status, parsed
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise MetaError(0, None, f"Graph API unreachable: {type(exc).__name__}") from None

    async def reject_call(self, connector: ConnectorConfig, call_id: str) -> bool:
        """Reject a WhatsApp call (``POST /{pnid}/calls`` with ``action: reject``); True if Meta accepted."""
        status, _ = await self.request(
            "POST", connector, "calls", {"messaging_product": "whatsapp", "call_id": call_id, "action": "reject"}
        )
        if status != 200:
            log.warning("Meta refused to reject call on %s: HTTP %s", connector.phone_number_id, status)
        return status == 200


# --- Sync to Meta -------------------------------------------------------------------------------------------

FORWARDED_BY_GATEWAY: contextvars.ContextVar[bool] = contextvars.ContextVar("forwarded_by_gateway", default=False)
"""True while the gateway applies a Block Users API call locally: Meta already has that change, so the sync
listener skips it (an unblock's entry carries the source of the original block, so the source alone cannot tell)."""

SYNC_POLL_SECONDS = 5.0
"""How often the running proxy looks for syncs queued by other processes (the CLI) or due for a retry."""

SYNC_LEASE_MS = 60_000
"""How long one replica owns a pending sync it is applying; another replica may take it over afterwards."""

SYNC_BACKOFF_MS = (5_000, 30_000, 120_000, 600_000, 3_600_000)
"""Delay before retry N (the last one repeats): a failed sync is retried forever, never dropped."""


class MetaSync:
    """Applies blocks and unblocks made in the admin API, CLI or plugins at Meta (``sync_to_meta: true``).

    Every change is first written to a per-connector queue in Redis (``wabl:{pnid}:meta_sync`` hash: match key
    → pending record; ``wabl:{pnid}:meta_sync_due`` zset: match key → next attempt, Unix ms), then applied by
    the running proxy's background task. Only the latest change per user is kept (a block followed by an
    unblock before the sync syncs the unblock). A failure stays in the queue with ``attempts`` and
    ``last_error`` and is retried with backoff; it is never dropped. The CLI, which runs without the proxy,
    only queues: the running proxy picks its changes up within :data:`SYNC_POLL_SECONDS`.

    Args:
        store: the blocklist store (its Redis client holds the queue).
        config: the running proxy's :class:`LiveConfig` (the one the blocklist service reads), or a config of its own
            (the CLI).
        client: the Meta client; None in processes that only queue (the CLI).
        clock: seconds since the epoch.
    """

    def __init__(
        self,
        store: BlocklistStore,
        config: Config | LiveConfig,
        client: MetaClient | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.queue = SyncQueue(store.redis)
        self.live = live(config)
        self.client = client
        self.clock = clock
        self.wake = asyncio.Event()
        self._round = asyncio.Lock()  # one round at a time in this process; the lease guards across replicas

    @property
    def config(self) -> Config:
        """The config now (read per call: a reload replaces it)."""
        return self.live.current

    def attach(self, service: BlocklistService) -> None:
        """Queue every change of ``service`` on a connector with ``sync_to_meta``."""
        service.add_listener(self.on_change)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def on_change(self, action: Literal["block", "unblock"], pnid: str, entry: BlockEntry) -> None:
        """Blocklist listener: queue the change for Meta (skipping the Block Users API's own changes)."""
        connector = self.config.connector(pnid)
        if connector is None or not connector.sync_to_meta or FORWARDED_BY_GATEWAY.get():
            return
        record = {"action": action, "user": entry.number, "kind": entry.kind, "attempts": 0,
                  "queued_at_ms": self.now_ms(), "last_error": ""}  # fmt: skip
        try:
            await self.queue.put(pnid, entry.key, _dumps(record))
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            # The change itself is stored; only its sync could not be queued. Say so loudly.
            log.error(
                "could not queue the Meta sync of a %s on %s (%s): apply it at Meta by hand",
                action,
                pnid,
                type(exc).__name__,
            )
            raise StoreUnavailable("the Meta sync queue is unavailable") from exc
        self.wake.set()

    async def pending(self, pnid: str) -> dict[str, dict[str, Any]]:
        """Every sync still waiting for Meta on a connector: match key → record (action, user, attempts,
        last_error, next_attempt_ms)."""
        return await self.queue.pending(pnid)

    async def run_once(self) -> int:
        """Apply every due sync of every connector with ``sync_to_meta``; returns how many succeeded.

        Waits for a round already running in this process, so after it returns every sync that was due has
        been attempted.
        """
        async with self._round:
            return await self._round_once()

    async def _round_once(self) -> int:
        done = 0
        for connector in self.config.connectors:
            if not connector.sync_to_meta:
                continue
            pnid = connector.phone_number_id
            now = self.now_ms()
            for key in await self.queue.due(pnid, now):
                raw = await self.queue.claim(pnid, key, now, now + SYNC_LEASE_MS)
                if raw:
                    done += await self._apply(connector, key, raw)
        return done

    async def _apply(self, connector: ConnectorConfig, key: str, raw: str) -> int:
        assert self.client is not None
        record = json.loads(raw)
        field = "user_id" if record.get("kind") == "bsuid" else "user"
        body = {"messaging_product": "whatsapp", "block_users": [{field: record["user"]}]}
        method = "POST" if record["action"] == "block" else "DELETE"
        try:
            status, answer = await self.client.request(method, connector, "block_users", body)
            error = _sync_error(status, answer)
        except MetaError as exc:
            error = str(exc)
        pnid = connector.phone_number_id
        if not error:
            await self.queue.done(pnid, key, raw)
            log.info("synced a %s on %s to Meta", record["action"], connector.phone_number_id)
            return 1
        attempts = int(record.get("attempts", 0)) + 1
        record.update(attempts=attempts, last_error=error[:500], last_attempt_ms=self.now_ms())
        delay = SYNC_BACKOFF_MS[min(attempts, len(SYNC_BACKOFF_MS)) - 1]
        await self.queue.failed(pnid, key, raw, _dumps(record), self.now_ms() + delay)
        log.warning(
            "Meta sync of a %s on %s failed (attempt %d, next in %ds): %s",
            record["action"],
            connector.phone_number_id,
            attempts,
            delay // 1000,
            error[:200],
        )
        return 0

    async def run(self) -> None:
        """The background task: apply due syncs when woken by a change, or every :data:`SYNC_POLL_SECONDS`."""
        while True:
            self.wake.clear()
            try:
                await self.run_once()
            except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
                log.warning("Meta sync paused: the store is unavailable (%s)", type(exc).__name__)
            except Exception:
                log.exception("Meta sync round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), SYNC_POLL_SECONDS)


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


def _sync_error(status: int, answer: Any) -> str:
    """An empty string when Meta applied the change; otherwise what went wrong, without secrets."""
    result = answer.get("block_users") if isinstance(answer, dict) else None
    failed = result.get("failed_users") if isinstance(result, dict) else None
    if 200 <= status < 300 and not failed:
        return ""
    if failed and isinstance(failed, list):
        errors = [e for user in failed if isinstance(user, dict) for e in user.get("errors", []) if isinstance(e, dict)]
        if errors:
            first = errors[0]
            data = first.get("error_data")
            details = data.get("details", "") if isinstance(data, dict) else ""
            return f"Meta refused (code {first.get('code')}): {first.get('message', '')} {details}".strip()
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        return f"Meta answered HTTP {status} (code {error.get('code')}): {str(error.get('message', ''))[:200]}"
    return f"Meta answered HTTP {status}"
