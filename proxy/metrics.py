"""Prometheus metrics, served at ``/metrics`` (text exposition format).

Every metric lives in one :class:`Metrics` object per application, with its own ``CollectorRegistry``, so several
apps in one process (tests, plugins) never collide. With ``wa-blocklist serve --workers N`` each worker process has
its own registry and a scrape reaches one worker: scrape each worker separately or sum over ``instance`` only as
far as that goes (see README.md, "Prometheus metrics").

The metrics moved on every request, every upstream call, every Redis call and every webhook
(``wabl_requests_total``, ``wabl_request_seconds``, ``wabl_upstream_seconds``, ``wabl_store_seconds``,
``wabl_store_errors_total``, ``wabl_inbound_blocked_items_total``, ``wabl_webhook_forwards_total``) are
kept as plain numbers (:class:`PlainCounter`, :class:`PlainHistogram`) and handed to prometheus_client at scrape
time as the very families its ``Counter`` and ``Histogram`` would give (names, labels, HELP, buckets,
``_created``): its objects take a lock, a label lookup and a walk over the buckets per observation, tens of
thousands of instructions on a path that costs a few hundred thousand. They are updated from the event loop's
thread only.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "PlainCounter", "PlainHistogram"]

from .base.logs import RequestInfo
from .store.cache import CheckCache

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def _created_series_wanted() -> bool:
    """prometheus_client's own switch for the ``_created`` series (``disable_created_metrics()``, or the
    ``PROMETHEUS_DISABLE_CREATED_SERIES`` environment variable), honoured as its own metrics honour it."""
    return bool(getattr(prometheus_metrics, "_use_created", True))


class PlainCounter(Collector):
    """A Prometheus counter kept as plain numbers: ``values[labelvalues] += 1`` on the hot path, exported at
    scrape time as the family prometheus_client's ``Counter`` would give (``_total`` and ``_created`` per series).

    Args:
        name: the metric's name without ``_total``.
        documentation: the HELP text.
        labelnames: the label names, in order.
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.values: dict[tuple[str, ...], float] = {}
        self.created: dict[tuple[str, ...], float] = {}
        if not self.labelnames:  # as prometheus_client: an unlabelled counter exists (at 0) from the start
            self.start(())

    def start(self, labelvalues: tuple[str, ...]) -> None:
        """Create the series for ``labelvalues`` at 0 (what ``Counter.labels(...)`` does on first use)."""
        if len(labelvalues) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {labelvalues}")
        if labelvalues not in self.values:
            self.values[labelvalues] = 0
            self.created[labelvalues] = time.time()

    def inc(self, labelvalues: tuple[str, ...] = (), amount: float = 1) -> None:
        """Add ``amount`` to the series of ``labelvalues`` (the hot paths inline this)."""
        if labelvalues not in self.values:
            self.start(labelvalues)
        self.values[labelvalues] += amount

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        created = self.created if _created_series_wanted() else {}
        for labelvalues, value in list(self.values.items()):  # a copy: a scrape from another thread is safe
            family.add_metric(labelvalues, float(value), created=created.get(labelvalues))
        yield family


class PlainHistogram(Collector):
    """A Prometheus histogram kept as plain numbers: one list per series holding the count of each bucket (not
    cumulative) and, last, the sum; ``bisect`` finds an observation's bucket. Exported at scrape time as the family
    prometheus_client's ``Histogram`` would give (cumulative ``_bucket`` with ``le``, ``_count``, ``_sum``,
    ``_created``).

    Args:
        name: the metric's name.
        documentation: the HELP text.
        labelnames: the label names, in order.
        buckets: the upper bounds, ascending (``+Inf`` is added).
    """

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str] = (), *, buckets: Sequence[float]
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds) or not bounds:
            raise ValueError(f"{self.name}: buckets must be in ascending order")
        if bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self.bounds = tuple(bounds)
        """The upper bounds, ``+Inf`` last: ``bisect_left(bounds, x)`` is the first bucket with ``x <= le``."""
        self._le = tuple(floatToGoString(b) for b in self.bounds)  # type: ignore[no-untyped-call]  # as Histogram
        self.series: dict[tuple[str, ...], list[float]] = {}
        self.created: dict[tuple[str, ...], float] = {}
        if not self.labelnames:
            self.start(())

    def start(self, labelvalues: tuple[str, ...]) -> list[float]:
        """The series of ``labelvalues``, created empty on first use."""
        series = self.series.get(labelvalues)
        if series is None:
            if len(labelvalues) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {labelvalues}")
            series = self.series[labelvalues] = [0] * len(self.bounds) + [0.0]
            self.created[labelvalues] = time.time()
        return series

    def observe(self, amount: float, labelvalues: tuple[str, ...] = ()) -> None:
        """Count one observation in the series of ``labelvalues``."""
        _count(self.series.get(labelvalues) or self.start(labelvalues), self.bounds, amount)

    def labels(self, *labelvalues: str) -> PlainSeries:
        """The series of ``labelvalues``, bound once for a hot path (as ``Histogram.labels``)."""
        return PlainSeries(self.start(labelvalues), self.bounds)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with_created = _created_series_wanted()
        for labelvalues, series in list(self.series.items()):
            *counts, total = series  # one copy, so the sum and the buckets of a series agree
            cumulative = 0.0
            buckets = []
            for le, count in zip(self._le, counts, strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(labelvalues, buckets, total)
            if with_created:
                labels = dict(zip(self.labelnames, labelvalues, strict=True))
                family.samples.append(Sample(f"{self.name}_created", labels, self.created[labelvalues], None))
        yield family


class PlainSeries:
    """One series of a :class:`PlainHistogram`, bound: ``observe(seconds)`` as a prometheus_client child's."""

    __slots__ = ("bounds", "series")

    def __init__(self, series: list[float], bounds: tuple[float, ...]) -> None:
        self.series, self.bounds = series, bounds

    def observe(self, amount: float) -> None:
        _count(self.series, self.bounds, amount)


def _count(series: list[float], bounds: tuple[float, ...], amount: float) -> None:
    """One observation into a :class:`PlainHistogram` series: its bucket's count and the sum."""
    series[bisect_left(bounds, amount)] += 1
    series[-1] += amount


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
        # Those moved on every request, upstream call, Redis call or webhook are plain numbers (see the module
        # docstring), registered in the order the scrape has always listed them.
        self.requests = PlainCounter(
            "wabl_requests",
            "Requests handled, by face (gateway, webhooks, admin, ops) and outcome",
            ["face", "outcome"],
        )
        r.register(self.requests)
        self.request_seconds = PlainHistogram(
            "wabl_request_seconds", "Time to answer a request, by face", ["face"], buckets=LATENCY_BUCKETS
        )
        r.register(self.request_seconds)
        self.inbound_blocked = PlainCounter(
            "wabl_inbound_blocked_items", "Webhook items of blocked users removed before forwarding", ["connector"]
        )
        r.register(self.inbound_blocked)
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
        self.upstream_seconds = PlainHistogram(
            "wabl_upstream_seconds", "Time to the response headers of upstream calls (graph, contact_center)",
            ["upstream"], buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        r.register(self.upstream_seconds)
        self.upstream_errors = Counter(
            "wabl_upstream_errors", "Upstream calls that failed without a response (connect errors, timeouts)",
            ["upstream"], registry=r,
        )  # fmt: skip
        self.store_seconds = PlainHistogram(
            "wabl_store_seconds", "Time of each blocklist store (Redis) operation", buckets=STORE_BUCKETS
        )
        r.register(self.store_seconds)
        self.store_errors = PlainCounter(
            "wabl_store_errors", "Blocklist store operations that failed (Redis unreachable, timed out, loading)"
        )
        r.register(self.store_errors)
        self.webhook_forwards = PlainCounter(
            "wabl_webhook_forwards", "Webhooks forwarded to contact centers, by connector and result "
            "(delivered, rejected, unreachable, timeout)", ["connector", "result"],
        )  # fmt: skip
        r.register(self.webhook_forwards)
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
        self._request_counts = self.requests.values
        self._store_seconds = self.store_seconds.labels()

    def watch_cache(self, cache: CheckCache | None) -> None:
        """Report this check cache's hits and misses."""
        self._cache.cache = cache

    def request_done(self, info: RequestInfo, status: int, seconds: float) -> None:
        """The request middleware's hook (see :func:`wa_blocklist.proxy.base.logs.make_request_middleware`): counts
        the request in ``wabl_requests_total`` and its time in ``wabl_request_seconds``.

        :meth:`PlainCounter.inc` inlined for a series already started (faces and outcomes are a handful of fixed
        words, so the series stay few).
        """
        key = (info.face, info.outcome)
        counts = self._request_counts
        if key in counts:
            counts[key] += 1
        else:
            self.requests.inc(key)
        self.request_seconds.observe(seconds, (info.face,))

    def store_call(self, seconds: float, failed: bool) -> None:
        """The store's hook, after each Redis operation (``wabl_store_seconds``, ``wabl_store_errors_total``)."""
        self._store_seconds.observe(seconds)
        if failed:
            self.store_errors.values[()] += 1

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
