"""The application factory: one aiohttp server with the gateway, the webhook receiver and the admin app."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from .admin import create_admin_app
from .blocklist import BlocklistService, Clock
from .cache import CheckCache
from .config import Config
from .gateway import setup_gateway
from .keys import CLOCK, CONFIG, GRAPH_SESSION, SERVICE, STORE, WEBHOOK_SESSION
from .store import open_store
from .webhooks import setup_webhooks


def create_app(config: Config, *, clock: Clock = time.time) -> web.Application:
    """Build the proxy application.

    Route order matters: the webhook receiver and the admin app are matched before the gateway's catch-all.

    Args:
        config: the validated configuration.
        clock: seconds since the epoch; tests pass a controllable clock.
    """
    app = web.Application()
    app[CONFIG] = config
    app[CLOCK] = clock
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_graph_session_ctx)
    app.cleanup_ctx.append(_webhook_session_ctx)
    app.add_subapp("/admin/", create_admin_app())
    setup_webhooks(app)
    setup_gateway(app)  # keep last: the gateway's catch-all route must come after every other route
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_store(app[CONFIG].store) as store:
        cache = CheckCache(store.redis) if app[CONFIG].store.local_cache else None
        app[STORE] = store
        app[SERVICE] = BlocklistService(store, app[CONFIG], app[CLOCK], cache=cache)
        subscriber = asyncio.create_task(cache.run(), name="check-cache-invalidation") if cache else None
        try:
            yield
        finally:
            if cache is not None and subscriber is not None:
                cache.stop()
                subscriber.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await subscriber


async def _graph_session_ctx(app: web.Application) -> AsyncIterator[None]:
    # No total timeout: media up/downloads of tens of MB must not be cut; connect and read idle time are bounded.
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=app[CONFIG].graph.timeout_seconds)
    connector = aiohttp.TCPConnector(limit=1000, limit_per_host=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        app[GRAPH_SESSION] = session
        yield


async def _webhook_session_ctx(app: web.Application) -> AsyncIterator[None]:
    timeout = aiohttp.ClientTimeout(total=app[CONFIG].webhooks.forward_timeout_seconds)
    connector = aiohttp.TCPConnector(limit=200, ttl_dns_cache=300)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        app[WEBHOOK_SESSION] = session
        yield
