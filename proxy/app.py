"""The application factory: one aiohttp server with the gateway, the webhook receiver and the admin app."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from .admin import create_admin_app
from .appkeys import (
    CLOCK,
    CONFIG,
    GATEWAY_CLIENT,
    GATEWAY_SESSION,
    GRAPH_SESSION,
    META_SYNC,
    METRICS,
    SERVICE,
    STORE,
    WEBHOOK_CLIENT,
)
from .base.logs import (
    RedactingAccessLogger,
    install_plain_http_errors,
    make_request_middleware,
    request_id_trace,
    send_request_id,
)
from .base.tasks import background
from .blocklist.meta_sync import MetaClient, MetaSync
from .blocklist.service import BlocklistService, Clock
from .config import Config, LiveConfig
from .inbound.receiver import setup_webhooks
from .metrics import Metrics
from .ops.expiry import DEFAULT_SWEEP_SECONDS, SWEEP_SECONDS, expiry_sweep_ctx
from .ops.health import setup_health
from .outbound.gateway import gateway_client, webhook_client
from .outbound.routes import gateway_first, setup_gateway
from .store.cache import CheckCache
from .store.client import open_store


def create_app(config: Config, *, clock: Clock = time.time) -> web.Application:
    """Build the proxy application.

    Route order matters: the webhook receiver and the admin app are matched before the gateway's catch-all.

    Args:
        config: the validated configuration.
        clock: seconds since the epoch; tests pass a controllable clock.
    """
    install_plain_http_errors()  # aiohttp's own 400 bodies quote the offending header line
    metrics = Metrics()
    # auto_decompress off: the gateway forwards the bytes it received (a gzip send stays gzip for Meta) and decodes
    # only what it inspects (graph/classify.py: decode_body).
    request_context = make_request_middleware(metrics.request_done)
    app = web.Application(middlewares=[request_context], handler_args={"auto_decompress": False})
    app[CONFIG] = LiveConfig(config)  # the one config reference; a reload sets its current (run/reload.py)
    app[CLOCK] = clock
    app[METRICS] = metrics
    app.on_response_prepare.append(send_request_id)
    app[SWEEP_SECONDS] = DEFAULT_SWEEP_SECONDS
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(expiry_sweep_ctx)
    app.cleanup_ctx.append(_graph_session_ctx)
    app.cleanup_ctx.append(_webhook_session_ctx)
    app.add_subapp("/admin/", create_admin_app())
    setup_health(app)
    setup_webhooks(app)
    gateway = setup_gateway(app)  # keep last: the gateway's catch-all route must come after every other route
    gateway_first(app, request_context, gateway)  # plain Graph paths skip the router (outbound/routes.py)
    app.cleanup_ctx.append(_meta_sync_ctx)
    return app


MAX_REQUEST_LINE = 8190
"""Longest request line accepted (method, target, version); longer → 414 from aiohttp before any handler runs."""
MAX_HEADER_FIELD = 8190
"""Longest header (name and value) accepted; longer → 431."""
MAX_HEADERS = 100
"""Most headers accepted on one request; more → 431."""


def server_options(config: Config) -> dict[str, Any]:
    """Options of the HTTP server (``web.run_app`` / ``AppRunner`` keyword arguments) for hostile clients.

    Header size limits, an idle timeout that also closes connections that never finish their headers
    (aiohttp arms it when the connection opens), and the access log with secret query values redacted.
    """
    return {
        "keepalive_timeout": config.server.idle_timeout_seconds,
        "max_line_size": MAX_REQUEST_LINE,
        "max_field_size": MAX_HEADER_FIELD,
        "max_headers": MAX_HEADERS,
        "access_log_class": RedactingAccessLogger,
    }


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_store(app[CONFIG].current.store) as store:
        cache = CheckCache(store.redis) if app[CONFIG].current.store.local_cache else None
        store.observe = app[METRICS].store_call
        app[METRICS].watch_cache(cache)
        app[STORE] = store
        app[SERVICE] = BlocklistService(store, app[CONFIG], app[CLOCK], cache=cache)
        if cache is None:
            yield
            return
        async with background(cache.run(), "check-cache-invalidation"):
            try:
                yield
            finally:
                cache.stop()  # run() returns within a second even if a client timeout swallows the cancellation


async def _graph_session_ctx(app: web.Application) -> AsyncIterator[None]:
    # No total timeout: media up/downloads of tens of MB must not be cut; connect and read idle time are bounded.
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=app[CONFIG].current.graph.timeout_seconds)

    def session(limit: int, traces: list[aiohttp.TraceConfig]) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300, enable_cleanup_closed=True)
        return aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            trace_configs=traces,
        )

    async with (
        session(1000, []) as gateway,
        session(100, [request_id_trace(), app[METRICS].trace("graph")]) as own,
        gateway_client(app[CONFIG].current) as client,
    ):
        app[GATEWAY_SESSION] = gateway
        app[GRAPH_SESSION] = own
        app[GATEWAY_CLIENT] = client
        yield


async def _webhook_session_ctx(app: web.Application) -> AsyncIterator[None]:
    async with webhook_client() as client:
        app[WEBHOOK_CLIENT] = client
        yield


async def _meta_sync_ctx(app: web.Application) -> AsyncIterator[None]:
    """Attach the Meta sync listener and run its retry task while the app runs (only when a connector syncs)."""
    config = app[CONFIG].current
    if not any(c.sync_to_meta for c in config.connectors):
        yield
        return
    sync = MetaSync(app[STORE], app[CONFIG], MetaClient(app[GRAPH_SESSION], config.graph), app[CLOCK])
    sync.attach(app[SERVICE])
    app[META_SYNC] = sync
    async with background(sync.run(), "meta-sync"):
        yield
