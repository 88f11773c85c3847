"""/metrics: every counter and histogram moves with real traffic through the real proxy."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from wa_blocklist.proxy.app import create_app
from wa_blocklist.proxy.appkeys import METRICS
from wa_blocklist.proxy.blocklist.service import Actor, BlocklistService

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
