"""Flood protection (issue 19): more than N messages in M seconds from one user puts a temporary auto block on them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application

from wa_blocklist.proxy.app import create_app
from wa_blocklist.proxy.appkeys import METRICS, SERVICE
from wa_blocklist.proxy.blocklist.service import BlocklistService

import payloads as p
from fakes import FakeContactCenter, FakeGraph, sign
from support import APP_SECRET, APP_SECRET_BR, PNID, PNID_BR, FakeClock, auth

NUMBER = "573001234567"
OTHER = "573007654321"
LIMIT = 3
WINDOW = 10
BLOCK = 600


def _flood_on(data: dict[str, Any]) -> None:
    data["connectors"][0].update(flood_max_messages=LIMIT, flood_window_seconds=WINDOW, flood_block_seconds=BLOCK)


async def _client(
    aiohttp_client: Any, make_config: Any, clock: FakeClock, *, deduplicate: bool = True
) -> tuple[TestClient[Any, Any], Application]:
    def adjust(data: dict[str, Any]) -> None:
        _flood_on(data)
        data.setdefault("webhooks", {})["deduplicate_replays"] = deduplicate

    app = create_app(make_config(adjust), clock=clock)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    return client, app


async def _post(client: TestClient[Any, Any], body: bytes) -> int:
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(APP_SECRET, body)}
    return (await client.post("/webhooks/whatsapp", data=body, headers=headers)).status


def _one(sender: str, text: str) -> bytes:
    return p.encode(p.envelope(p.change(PNID, contacts=[p.contact(sender)], messages=[p.text(sender, text)])))


def _texts(center: FakeContactCenter) -> list[str]:
    return [
        m["text"]["body"]
        for r in center.received
        for e in json.loads(r.body)["entry"]
        for c in e["changes"]
        for m in c["value"].get("messages", [])
    ]


async def test_a_flood_of_n_plus_one_messages_makes_a_temporary_block(
    aiohttp_client: Any, make_config: Any, clock: FakeClock, contact_center: FakeContactCenter, fake_graph: FakeGraph
) -> None:
    client, app = await _client(aiohttp_client, make_config, clock)
    service: BlocklistService = app[SERVICE]
    for i in range(LIMIT):
        assert await _post(client, _one(NUMBER, f"spam {i}")) == 200
        clock.advance(1)
    assert _texts(contact_center) == ["spam 0", "spam 1", "spam 2"]
    assert await service.check(PNID, NUMBER) is None

    # Message N+1 within the window: blocked at once, that message and every later one removed.
    assert await _post(client, _one(NUMBER, "spam 3")) == 200
    assert await _post(client, _one(NUMBER, "spam 4")) == 200
    assert _texts(contact_center) == ["spam 0", "spam 1", "spam 2"]
    entry = await service.get(PNID, NUMBER)
    assert entry.source == "auto" and entry.blocked_by == "flood" and "more than 3 messages" in entry.reason
    assert entry.expires_at_ms == entry.blocked_at_ms + BLOCK * 1000
    records, _ = await service.audit(PNID)
    assert (records[0]["action"], records[0]["source"], records[0]["by"]) == ("block", "auto", "flood")
    listed = await (await client.get(f"/admin/api/connectors/{PNID}/blocks", headers=auth())).json()
    assert listed["blocks"][0]["source"] == "auto" and listed["blocks"][0]["expires_at"] is not None
    assert app[METRICS].registry.get_sample_value("wabl_auto_blocks_total", {"connector": PNID}) == 1

    # A send to them is refused while the block lasts; another user is untouched.
    send = {"messaging_product": "whatsapp", "to": NUMBER, "type": "text", "text": {"body": "hola"}}
    assert (await client.post(f"/v21.0/{PNID}/messages", json=send)).status == 400
    assert await _post(client, _one(OTHER, "hola")) == 200
    assert _texts(contact_center)[-1] == "hola"

    # When it expires the user writes again, and the window starts afresh.
    clock.advance(BLOCK)
    assert await _post(client, _one(NUMBER, "perdón")) == 200
    assert _texts(contact_center)[-1] == "perdón"


@pytest.mark.parametrize("deduplicate", [True, False], ids=["replays-deduplicated", "replays-forwarded"])
async def test_messages_spread_over_the_window_and_retries_do_not_count(
    aiohttp_client: Any, make_config: Any, clock: FakeClock, contact_center: FakeContactCenter, deduplicate: bool
) -> None:
    client, app = await _client(aiohttp_client, make_config, clock, deduplicate=deduplicate)
    for i in range(3 * LIMIT):
        assert await _post(client, _one(NUMBER, f"calm {i}")) == 200
        clock.advance(WINDOW / LIMIT + 0.1)
    # Meta retries the same webhook (same message IDs): not counted again, whether or not the receiver forwards it.
    body = _one(NUMBER, "retried")
    for _ in range(LIMIT + 2):
        assert await _post(client, body) == 200
    assert len(_texts(contact_center)) == 3 * LIMIT + (1 if deduplicate else LIMIT + 2)
    assert await app[SERVICE].check(PNID, NUMBER) is None


async def test_flood_protection_is_off_by_default_and_per_connector(
    aiohttp_client: Any, make_config: Any, clock: FakeClock, contact_center: FakeContactCenter
) -> None:
    client, app = await _client(aiohttp_client, make_config, clock)
    for i in range(LIMIT + 3):  # the Brazilian connector has no flood protection
        body = p.encode(p.envelope(p.change(PNID_BR, contacts=[p.contact(NUMBER)], messages=[p.text(NUMBER, str(i))])))
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(APP_SECRET_BR, body)}
        assert (await client.post("/webhooks/whatsapp", data=body, headers=headers)).status == 200
    assert len(contact_center.received) == LIMIT + 3
    assert await app[SERVICE].check(PNID_BR, NUMBER) is None


async def test_a_burst_in_one_webhook_counts_every_message(
    aiohttp_client: Any, make_config: Any, clock: FakeClock, contact_center: FakeContactCenter
) -> None:
    client, app = await _client(aiohttp_client, make_config, clock)
    burst = [p.text(NUMBER, f"b{i}") for i in range(LIMIT + 1)]
    body = p.encode(p.envelope(p.change(PNID, contacts=[p.contact(NUMBER)], messages=burst)))
    assert await _post(client, body) == 200
    assert contact_center.received == []  # the user was blocked by this webhook: their items are removed
    assert (await app[SERVICE].get(PNID, NUMBER)).source == "auto"
