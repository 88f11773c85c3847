"""Prometheus metrics, served at ``/metrics`` (text exposition format).

Every metric lives in one :class:`Metrics` object per application, with its own ``CollectorRegistry``, so several
apps in one process (tests, plugins) never collide. With ``wa-blocklist serve --workers N`` each worker process has
its own registry and a scrape reaches one worker: scrape each worker separately or sum over ``instance`` only as
far as that goes (see README.md, "Prometheus metrics").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]
from prometheus_client.registry import Collector

from .base.logs import RequestInfo
from .store.cache import CheckCache

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class _CacheCollector(Collector):
    """Reads the check cache's own hit and miss counters at scrape time (no cost on the hot path)."""

    def __init__(self) -> None:
        self.cache: CheckCache | None = None

    def collect(self) -> Iterator[Metric]:
        hits = CounterMetricFamily("wabl_check_cache_hits", "Blocklist checks answered from the local cache")
        misses = CounterMetricFamily("wabl_check_cache_misses", "Blocklist checks that had to ask Redis")
        stale = CounterMetricFamily(
            "wabl_check_cache_stale",
            "Checks sent to Redis although an answer was cached: the invalidation channel was not proven current "
            "within the staleness bound (a stalled subscription)",
        )
        hits.add_metric([], self.cache.hits if self.cache else 0)
        misses.add_metric([], self.cache.misses if self.cache else 0)
        stale.add_metric([], self.cache.stale_checks if self.cache else 0)
        yield hits
        yield misses
        yield stale


class Metrics:
    """Every metric of one proxy application."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "wabl_requests", "Requests handled, by face (gateway, webhooks, admin, ops) and outcome",
            ["face", "outcome"], registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "wabl_request_seconds", "Time to answer a request, by face", ["face"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.inbound_blocked = Counter(
            "wabl_inbound_blocked_items", "Webhook items of blocked users removed before forwarding", ["connector"],
            registry=r,
        )  # fmt: skip
        self.outbound_refused = Counter(
            "wabl_outbound_refused", "Sends, calls and group adds refused because the user is blocked", ["connector"],
            registry=r,
        )  # fmt: skip
        self.auto_blocks = Counter(
            "wabl_auto_blocks", "Temporary blocks made by flood protection (source auto)", ["connector"], registry=r
        )
        self.optout_refused = Counter(
            "wabl_optout_refused", "Template and marketing sends refused because the user opted out", ["connector"],
            registry=r,
        )  # fmt: skip
        self.upstream_seconds = Histogram(
            "wabl_upstream_seconds", "Time to the response headers of upstream calls (graph, contact_center)",
            ["upstream"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.upstream_errors = Counter(
            "wabl_upstream_errors", "Upstream calls that failed without a response (connect errors, timeouts)",
            ["upstream"], registry=r,
        )  # fmt: skip
        self.store_seconds = Histogram(
            "wabl_store_seconds", "Time of each blocklist store (Redis) operation", buckets=STORE_BUCKETS, registry=r
        )
        self.store_errors = Counter(
            "wabl_store_errors", "Blocklist store operations that failed (Redis unreachable, timed out, loading)",
            registry=r,
        )  # fmt: skip
        self.webhook_forwards = Counter(
            "wabl_webhook_forwards", "Webhooks forwarded to contact centers, by connector and result "
            "(delivered, rejected, unreachable, timeout)", ["connector", "result"], registry=r,
        )  # fmt: skip
        self.webhook_replays = Counter(
            "wabl_webhook_replays", "Verified webhook bodies acknowledged without forwarding: already delivered "
            "within webhooks.replay_window_seconds", registry=r,
        )  # fmt: skip
        self.expired = Counter(
            "wabl_blocks_expired", "Temporary blocks removed by the expiry sweep", ["connector"], registry=r
        )
        self.reloads = Counter(
            "wabl_config_reloads", "Config reloads on SIGHUP, by result (applied, refused)", ["result"], registry=r
        )
        self._cache = _CacheCollector()
        r.register(self._cache)
        # Children bound once: ``labels()`` on every request costs more than the observation itself.
        self.graph_seconds = self.upstream_seconds.labels("graph")
        self.graph_errors = self.upstream_errors.labels("graph")
        self.contact_center_seconds = self.upstream_seconds.labels("contact_center")
        self.contact_center_errors = self.upstream_errors.labels("contact_center")
        self._per_request: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def watch_cache(self, cache: CheckCache | None) -> None:
        """Report this check cache's hits and misses."""
        self._cache.cache = cache

    def request_done(self, info: RequestInfo, status: int, seconds: float) -> None:
        """The request middleware's hook (see :func:`wa_blocklist.proxy.base.logs.make_request_middleware`)."""
        children = self._per_request.get((info.face, info.outcome))
        if children is None:  # faces and outcomes are a handful of fixed words, so this stays small
            children = (self.requests.labels(info.face, info.outcome), self.request_seconds.labels(info.face))
            self._per_request[(info.face, info.outcome)] = children
        children[0].inc()
        children[1].observe(seconds)

    def store_call(self, seconds: float, failed: bool) -> None:
        """The store's hook, after each Redis operation."""
        self.store_seconds.observe(seconds)
        if failed:
            self.store_errors.inc()

    def trace(self, upstream: str) -> aiohttp.TraceConfig:
        """A client trace that times every call of a session to ``upstream`` (``graph`` or ``contact_center``)."""

        async def start(_s: aiohttp.ClientSession, ctx: SimpleNamespace, _p: Any) -> None:
            ctx.wabl_started = time.perf_counter()

        async def end(_s: aiohttp.ClientSession, ctx: SimpleNamespace, _p: Any) -> None:
            self.upstream_seconds.labels(upstream).observe(time.perf_counter() - ctx.wabl_started)

        async def failed(_s: aiohttp.ClientSession, ctx: SimpleNamespace, _p: Any) -> None:
            self.upstream_errors.labels(upstream).inc()

        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(start)
        trace.on_request_end.append(end)
        trace.on_request_exception.append(failed)
        return trace

    def render(self) -> bytes:
        return generate_latest(self.registry)
