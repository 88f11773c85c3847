"""/metrics: every counter and histogram moves with real traffic through the real proxy."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

from wa_blocklist.proxy.app import create_app
from wa_blocklist.proxy.appkeys import METRICS
from wa_blocklist.proxy.base.logs import RequestInfo
from wa_blocklist.proxy.blocklist.service import Actor, BlocklistService
from wa_blocklist.proxy.metrics import Metrics

import payloads as p
from fakes import FakeContactCenter, FakeGraph, sign
from support import APP_SECRET, PNID, ConfigFactory, FakeClock, auth, wrote_recently

BLOCKED = "573007654321"
ALLOWED = "573001234567"


async def scrape(client: TestClient[Any, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def send(to: str) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": "hola"}}


async def post_webhook(client: TestClient[Any, Any], *senders: str) -> int:
    body = p.encode(
        p.envelope(
            p.change(PNID, contacts=[p.contact(s) for s in senders], messages=[p.message("text", s) for s in senders])
        )
    )
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(APP_SECRET, body)}
    return (await client.post("/webhooks/whatsapp", data=body, headers=headers)).status


async def test_traffic_moves_the_counters(
    client: TestClient[Any, Any], service: BlocklistService, contact_center: FakeContactCenter, fake_graph: FakeGraph
) -> None:
    await wrote_recently(service, PNID, BLOCKED)
    await service.block(PNID, BLOCKED, actor=Actor("supervisor", "test"))
    before = await scrape(client)

    assert (await client.post(f"/v21.0/{PNID}/messages", json=send(BLOCKED))).status == 400
    assert (await client.post(f"/v21.0/{PNID}/messages", json=send(ALLOWED))).status == 200
    assert await post_webhook(client, BLOCKED, ALLOWED) == 200
    contact_center.status = 500
    assert await post_webhook(client, ALLOWED) == 502
    assert (await client.get("/admin/api/connectors", headers=auth())).status == 200
    assert (await client.get("/admin/api/connectors")).status == 401

    after = await scrape(client)
    grew = {key: after[key] - before.get(key, 0.0) for key in after}

    def delta(name: str, **labels: str) -> float:
        return grew.get((name, tuple(sorted(labels.items()))), 0.0)

    assert delta("wabl_requests_total", face="gateway", outcome="blocked") == 1
    assert delta("wabl_requests_total", face="gateway", outcome="ok") == 1
    assert delta("wabl_requests_total", face="webhooks", outcome="blocked") == 1
    assert delta("wabl_requests_total", face="webhooks", outcome="error") == 1
    assert delta("wabl_requests_total", face="admin", outcome="ok") == 1
    assert delta("wabl_requests_total", face="admin", outcome="refused") == 1
    assert delta("wabl_outbound_refused_total", connector=PNID) == 1
    assert delta("wabl_inbound_blocked_items_total", connector=PNID) == 2  # the message and the contact
    assert delta("wabl_webhook_forwards_total", connector=PNID, result="delivered") == 1
    assert delta("wabl_webhook_forwards_total", connector=PNID, result="rejected") == 1
    assert delta("wabl_upstream_seconds_count", upstream="graph") == 1
    assert delta("wabl_upstream_seconds_count", upstream="contact_center") == 2
    assert delta("wabl_request_seconds_count", face="gateway") == 2
    assert delta("wabl_store_seconds_count") >= 3
    assert value(after, "wabl_store_errors_total") == 0


async def test_upstream_errors_and_cache(
    client: TestClient[Any, Any], service: BlocklistService, contact_center: FakeContactCenter
) -> None:
    assert service.cache is not None
    await service.cache.subscribed.wait()
    for _ in range(3):
        assert (await client.post(f"/v21.0/{PNID}/messages", json=send(ALLOWED))).status == 200
    samples = await scrape(client)
    assert value(samples, "wabl_check_cache_misses_total") == 1
    assert value(samples, "wabl_check_cache_hits_total") == 2

    assert contact_center.server is not None
    await contact_center.server.close()  # the contact center goes away
    assert await post_webhook(client, ALLOWED) == 502
    samples = await scrape(client)
    assert value(samples, "wabl_webhook_forwards_total", connector=PNID, result="unreachable") == 1
    assert value(samples, "wabl_upstream_errors_total", upstream="contact_center") == 1


async def test_store_errors_are_counted(
    aiohttp_client: Any, make_config: ConfigFactory, clock: FakeClock, tmp_path: Any
) -> None:
    from support import RedisServer

    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:

        def use(data: dict[str, Any]) -> None:
            data["store"] = {"redis_url": redis.url, "timeout_seconds": 0.5}

        client = await aiohttp_client(create_app(make_config(use), clock=clock))
        redis.stop()
        assert (await client.post(f"/v21.0/{PNID}/messages", json=send(ALLOWED))).status == 503
        samples = await scrape(client)
        assert value(samples, "wabl_store_errors_total") >= 1
        assert value(samples, "wabl_requests_total", face="gateway", outcome="error") == 1
    finally:
        redis.stop()


async def test_each_app_has_its_own_registry(make_config: ConfigFactory, clock: FakeClock, aiohttp_client: Any) -> None:
    one = await aiohttp_client(create_app(make_config(), clock=clock))
    two = await aiohttp_client(create_app(make_config(), clock=clock))
    await asyncio.gather(one.get("/healthz"), one.get("/healthz"), two.get("/healthz"))
    assert value(await scrape(one), "wabl_requests_total", face="ops", outcome="ok") == 2
    assert value(await scrape(two), "wabl_requests_total", face="ops", outcome="ok") == 1
    assert one.app[METRICS].registry is not two.app[METRICS].registry


def _plain_families_text(registry: CollectorRegistry) -> str:
    """The exposition text with the ``_created`` timestamps blanked (they differ by the microsecond)."""
    return re.sub(r"(_created(?:\{[^}]*\})?) \S+", r"\1 T", generate_latest(registry).decode())


@pytest.mark.parametrize("created_series", [True, False])
def test_plain_metrics_scrape_exactly_as_prometheus_clients_own(created_series: bool) -> None:
    """The per-request and per-Redis-call metrics are plain numbers; a scrape must not tell them from
    prometheus_client's ``Counter`` and ``Histogram`` given the same observations (names, labels, HELP, types,
    buckets, ``_count``/``_sum``/``_created``, series order)."""
    if not created_series:
        disable_created_metrics()
    try:
        metrics = Metrics()
        reference = CollectorRegistry()
        requests = Counter(
            "wabl_requests", "Requests handled, by face (gateway, webhooks, admin, ops) and outcome",
            ["face", "outcome"], registry=reference,
        )  # fmt: skip
        request_seconds = Histogram(
            "wabl_request_seconds", "Time to answer a request, by face", ["face"], registry=reference,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )  # fmt: skip
        store_seconds = Histogram(
            "wabl_store_seconds", "Time of each blocklist store (Redis) operation", registry=reference,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )  # fmt: skip
        store_errors = Counter(
            "wabl_store_errors", "Blocklist store operations that failed (Redis unreachable, timed out, loading)",
            registry=reference,
        )  # fmt: skip
        # Bounds exactly (an observation equal to a bound is in that bucket), between bounds, beyond the last, 0.
        requests_seen = [
            ("gateway", "ok", 0.0042), ("gateway", "blocked", 0.001), ("webhooks", "forwarded", 0.0025),
            ("gateway", "ok", 31.0), ("admin", "refused", 0.0), ("gateway", "ok", 30.0), ("ops", "ok", 1e-7),
            ("webhooks", "error", 0.75),
        ]  # fmt: skip
        for face, outcome, seconds in requests_seen:
            metrics.request_done(RequestInfo("r", face, outcome=outcome), 200, seconds)
            requests.labels(face, outcome).inc()
            request_seconds.labels(face).observe(seconds)
        for seconds, failed in [(0.0001, False), (0.00031, False), (2.5, True), (1.0, False), (0.0, True)]:
            metrics.store_call(seconds, failed)
            store_seconds.observe(seconds)
            if failed:
                store_errors.inc()

        ours = CollectorRegistry()
        for collector in (metrics.requests, metrics.request_seconds, metrics.store_seconds, metrics.store_errors):
            ours.register(collector)
        expected = _plain_families_text(reference)
        assert _plain_families_text(ours) == expected
        assert "wabl_requests_created" in expected if created_series else "_created" not in expected
        whole = re.sub(r"(_created(?:\{[^}]*\})?) \S+", r"\1 T", metrics.render().decode())
        first, second = expected.split("# HELP wabl_store_seconds ")
        assert first in whole and "# HELP wabl_store_seconds " + second in whole  # as listed in the whole scrape
    finally:
        enable_created_metrics()
