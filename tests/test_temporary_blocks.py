"""Temporary blocks: expiry through every face, applied at once on the service clock, swept with an audit record."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from wa_blocklist.proxy.base.errors import BadRequest, NotBlocked
from wa_blocklist.proxy.blocklist.service import (
    Actor,
    BlocklistService,
    InboundUser,
    check_expiry,
    parse_duration,
    parse_expiry,
)
from wa_blocklist.proxy.graph.identity import recipient
from wa_blocklist.proxy.ops.expiry import SWEEP_SECONDS, sweep_once
from wa_blocklist.proxy.store.schema import BlockEntry

import payloads as p
from fakes import FakeContactCenter, FakeGraph, sign
from support import APP_SECRET, PNID, FakeClock, auth, wrote_recently

NUMBER = "573001234567"
OTHER = "573007654321"
DAY = 86_400
SUPERVISOR = Actor("supervisor", "test")
BLOCKS = f"/admin/api/connectors/{PNID}/blocks"


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("12h", 43_200), ("1d", DAY), ("7d", 7 * DAY), ("2w", 14 * DAY), ("90", 90), (45, 45), ("1D", DAY)],
)
def test_durations(text: Any, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0d", "1y", "-1d", "1.5d", "d", True, None, "1 d 2h"])
def test_bad_durations(text: Any) -> None:
    with pytest.raises(BadRequest):
        parse_duration(text)


def expiry(now: int, **terms: Any) -> int | None:
    """The expiry a block made at ``now`` with these terms gets, as BlocklistService.block computes it."""
    at, seconds = parse_expiry(**terms)
    expires = now + seconds * 1000 if seconds is not None else at
    check_expiry(expires, now)
    return expires


def test_expiry_validation() -> None:
    now = 1_800_000_000_000
    assert expiry(now) is None
    assert expiry(now, duration="1d") == now + DAY * 1000
    assert expiry(now, expires_at=iso(now / 1000 + 3600)) == now + 3_600_000
    with pytest.raises(BadRequest, match="either duration or expires_at"):
        expiry(now, duration="1d", expires_at=iso(now / 1000 + 3600))
    with pytest.raises(BadRequest, match="in the future"):
        expiry(now, expires_at=iso(now / 1000 - 1))
    with pytest.raises(BadRequest, match="at most a year"):
        expiry(now, duration="400d")
    with pytest.raises(BadRequest, match="time zone"):
        expiry(now, expires_at="2030-01-01T00:00:00")
    with pytest.raises(BadRequest, match="ISO 8601"):
        expiry(now, expires_at="next tuesday")


def test_entries_stored_before_expiry_existed_still_load() -> None:
    old = {"number": NUMBER, "kind": "phone", "key": NUMBER, "blocked_at_ms": 1, "reason": "", "blocked_by": "a",
           "source": "cli"}  # fmt: skip
    entry = BlockEntry.loads(json.dumps(old))
    assert entry.expires_at_ms is None and entry.to_json()["expires_at"] is None
    assert BlockEntry.loads(entry.dumps()) == entry


async def test_expired_block_stops_applying_at_once_everywhere(
    client: TestClient[Any, Any], service: BlocklistService, clock: FakeClock, fake_graph: FakeGraph,
    contact_center: FakeContactCenter,
) -> None:  # fmt: skip
    await wrote_recently(service, PNID, NUMBER)
    entry, created = await service.block(PNID, NUMBER, actor=SUPERVISOR, expires_at_ms=service.now_ms() + 3_600_000)
    assert created and entry.expires_at_ms == service.now_ms() + 3_600_000
    send = {"messaging_product": "whatsapp", "to": NUMBER, "type": "text", "text": {"body": "hi"}}

    # Before the expiry: every face sees the block (twice for the gateway: the second answer may come from the cache).
    for _ in range(2):
        resp = await client.post(f"/v21.0/{PNID}/messages", json=send)
        assert resp.status == 400 and (await resp.json())["error"]["code"] == 139900
    assert await service.is_blocked(PNID, recipient(NUMBER))
    assert (await service.get(PNID, NUMBER)).expires_at_ms == entry.expires_at_ms
    assert [e.number for e in (await service.list_blocks(PNID))[0]] == [NUMBER]
    assert (await service.connectors())[0]["blocked_count"] == 1

    # One millisecond before: still blocked; at the expiry: gone from every check, without any sweep.
    clock.advance(3600 - 0.001)
    assert await service.is_blocked(PNID, recipient(NUMBER))
    clock.advance(0.001)
    assert not await service.is_blocked(PNID, recipient(NUMBER))
    resp = await client.post(f"/v21.0/{PNID}/messages", json=send)
    assert resp.status == 200
    assert fake_graph.paths().count(f"/v21.0/{PNID}/messages") == 1
    with pytest.raises(NotBlocked):
        await service.get(PNID, NUMBER)
    assert (await service.list_blocks(PNID))[0] == []
    assert (await service.connectors())[0]["blocked_count"] == 0
    assert await service.check(PNID, NUMBER) is None
    resp = await client.get(f"{BLOCKS}/{NUMBER}", headers=auth())
    assert resp.status == 404

    # Inbound: the user's messages are forwarded again.
    body = p.encode(p.envelope(p.change(PNID, contacts=[p.contact(NUMBER)], messages=[p.message("text", NUMBER)])))
    assert (await _post_webhook(client, body)).status == 200
    assert len(contact_center.received) == 1


async def _post_webhook(client: TestClient[Any, Any], body: bytes) -> Any:
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(APP_SECRET, body)}
    return await client.post("/webhooks/whatsapp", data=body, headers=headers)


async def test_inbound_is_removed_until_the_expiry(
    client: TestClient[Any, Any], service: BlocklistService, clock: FakeClock, contact_center: FakeContactCenter
) -> None:
    await wrote_recently(service, PNID, NUMBER)
    await service.block(PNID, NUMBER, actor=SUPERVISOR, expires_at_ms=service.now_ms() + 60_000)

    def message() -> bytes:  # a new message each time (the same body again would be a replay)
        return p.encode(p.envelope(p.change(PNID, contacts=[p.contact(NUMBER)], messages=[p.message("text", NUMBER)])))

    assert (await _post_webhook(client, message())).status == 200
    assert contact_center.received == []  # nothing left to forward
    clock.advance(60)
    assert (await _post_webhook(client, message())).status == 200
    assert len(contact_center.received) == 1


async def test_link_to_an_expired_block_does_not_block(
    service: BlocklistService, client: Any, clock: FakeClock
) -> None:
    await wrote_recently(service, PNID, NUMBER, bsuid="CO.9912345678901234567")
    await service.block(PNID, "CO.9912345678901234567", actor=SUPERVISOR, expires_at_ms=service.now_ms() + 1000)
    assert await service.is_blocked(PNID, recipient(NUMBER))  # through the wa_id↔BSUID link
    clock.advance(1)
    assert not await service.is_blocked(PNID, recipient(NUMBER))
    assert await service.record_inbound(PNID, [InboundUser(wa_id=NUMBER)]) == [False]


async def test_cached_blocked_answer_does_not_outlive_the_expiry(
    service: BlocklistService, client: Any, clock: FakeClock
) -> None:
    assert service.cache is not None
    await service.cache.subscribed.wait()
    await wrote_recently(service, PNID, NUMBER, OTHER)
    await service.block(PNID, NUMBER, actor=SUPERVISOR, expires_at_ms=service.now_ms() + 5000)
    await service.block(PNID, OTHER, actor=SUPERVISOR)
    for _ in range(3):
        assert await service.first_blocked(PNID, [recipient(NUMBER)]) == NUMBER
        assert await service.first_blocked(PNID, [recipient(OTHER)]) == OTHER
    # The permanent block's answer is served from the cache; the temporary one is asked of Redis each time.
    hits = service.cache.hits
    assert await service.first_blocked(PNID, [recipient(OTHER)]) == OTHER
    assert service.cache.hits == hits + 1
    clock.advance(5)
    assert await service.first_blocked(PNID, [recipient(NUMBER)]) is None
    assert await service.first_blocked(PNID, [recipient(OTHER)]) == OTHER


async def test_reblocking_an_expired_entry_makes_a_new_block(
    service: BlocklistService, client: Any, clock: FakeClock
) -> None:
    await wrote_recently(service, PNID, NUMBER)
    first, _ = await service.block(PNID, NUMBER, actor=SUPERVISOR, expires_at_ms=service.now_ms() + 1000)
    again, created = await service.block(PNID, NUMBER, actor=SUPERVISOR)
    assert not created and again == first  # still active: idempotent, the existing (temporary) entry
    clock.advance(1)
    await wrote_recently(service, PNID, NUMBER)
    renewed, created = await service.block(PNID, NUMBER, actor=SUPERVISOR, reason="again")
    assert created and renewed.expires_at_ms is None and renewed.reason == "again"
    records, _ = await service.audit(PNID)
    assert [r["action"] for r in records] == ["block", "expire", "block"]
    assert records[1]["source"] == "expiry" and records[1]["by"] == "expiry"
    clock.advance(10 * DAY)
    assert await service.is_blocked(PNID, recipient(NUMBER))


async def test_unblocking_an_expired_entry_says_not_blocked(
    service: BlocklistService, client: Any, clock: FakeClock
) -> None:
    await wrote_recently(service, PNID, NUMBER)
    await service.block(PNID, NUMBER, actor=SUPERVISOR, expires_at_ms=service.now_ms() + 1000)
    clock.advance(2)
    with pytest.raises(NotBlocked):
        await service.unblock(PNID, NUMBER, actor=SUPERVISOR)
    records, _ = await service.audit(PNID)
    assert [r["action"] for r in records] == ["expire", "block"]


async def test_sweep_removes_expired_entries_with_an_audit_record(
    service: BlocklistService, client: Any, clock: FakeClock, redis_url: str, app: Any
) -> None:
    await wrote_recently(service, PNID, NUMBER, OTHER)
    await service.block(
        PNID, NUMBER, actor=SUPERVISOR, reason="cooling off", expires_at_ms=service.now_ms() + DAY * 1000
    )
    await service.block(PNID, OTHER, actor=SUPERVISOR)
    changes: list[tuple[str, str]] = []

    async def listener(action: str, pnid: str, entry: BlockEntry) -> None:
        changes.append((action, entry.number))

    service.add_listener(listener)
    assert await sweep_once(app) == 0
    clock.advance(DAY)
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        invalidations = redis.pubsub()
        await invalidations.subscribe("wabl:invalidate")
        assert (await invalidations.get_message(timeout=5))["type"] == "subscribe"
        assert await sweep_once(app) == 1
        message = await invalidations.get_message(timeout=5)
        assert message is not None and message["data"] == PNID
        await invalidations.aclose()
        assert await redis.hkeys(f"wabl:{{{PNID}}}:blocks") == [OTHER]
        assert await redis.zrange(f"wabl:{{{PNID}}}:order", 0, -1) == [OTHER]
        assert await redis.zcard(f"wabl:{{{PNID}}}:expiry") == 0
    finally:
        await redis.aclose()
    records, _ = await service.audit(PNID)
    assert records[0] | {"id": ""} == {
        "id": "", "action": "expire", "number": NUMBER, "type": "phone", "by": "expiry", "source": "expiry",
        "reason": "cooling off", "at": records[0]["at"],
    }  # fmt: skip
    assert changes == [("unblock", NUMBER)]
    assert await sweep_once(app) == 0  # nothing twice


async def test_background_sweep_runs_in_the_app(make_config: Any, clock: FakeClock, aiohttp_client: Any) -> None:
    from wa_blocklist.proxy.app import create_app
    from wa_blocklist.proxy.appkeys import SERVICE

    app = create_app(make_config(), clock=clock)
    app[SWEEP_SECONDS] = 0.02
    client = await aiohttp_client(app)
    service = app[SERVICE]
    await wrote_recently(service, PNID, NUMBER)
    await service.block(PNID, NUMBER, actor=SUPERVISOR, expires_at_ms=service.now_ms() + 1000)
    clock.advance(1)
    deadline = datetime.now(UTC) + timedelta(seconds=20)
    while True:  # polls the audit trail: the sweep's period is what is waited on, with a deadline
        records, _ = await service.audit(PNID)
        if records[0]["action"] == "expire":
            break
        assert datetime.now(UTC) < deadline, "the background sweep never ran"
        await _next_round(app)
    metrics = await (await client.get("/metrics")).text()
    assert f'wabl_blocks_expired_total{{connector="{PNID}"}} 1.0' in metrics


async def _next_round(app: Any) -> None:
    import asyncio

    await asyncio.sleep(app[SWEEP_SECONDS])  # one sweep period: the condition itself is checked by the caller


async def test_admin_api_duration_and_expires_at(
    client: TestClient[Any, Any], service: BlocklistService, clock: FakeClock
) -> None:
    await wrote_recently(service, PNID, NUMBER, OTHER, "573005550000")
    resp = await client.post(BLOCKS, json={"number": NUMBER, "duration": "7d"}, headers=auth())
    assert resp.status == 201
    body = await resp.json()
    assert body["expires_at"] == (await service.get(PNID, NUMBER)).expires_at
    assert (await service.get(PNID, NUMBER)).expires_at_ms == service.now_ms() + 7 * DAY * 1000

    clock.advance(1)
    until = iso(int(clock.now) + 3 * 3600)
    resp = await client.post(BLOCKS, json={"number": OTHER, "expires_at": until}, headers=auth())
    assert resp.status == 201
    assert (await resp.json())["expires_at"].startswith(until[:19])

    clock.advance(1)
    resp = await client.post(BLOCKS, json={"number": "573005550000"}, headers=auth())
    assert (await resp.json())["expires_at"] is None
    listed = await (await client.get(BLOCKS, headers=auth())).json()
    assert [b["expires_at"] is None for b in listed["blocks"]] == [True, False, False]

    for bad, message in [
        ({"duration": "1y"}, "duration must be"),
        ({"duration": "367d"}, "at most a year"),
        ({"expires_at": iso(clock.now - 60)}, "in the future"),
        ({"expires_at": "tomorrow"}, "ISO 8601"),
        ({"duration": "1d", "expires_at": iso(clock.now + 60)}, "not both"),
        ({"duration": ["1d"]}, "duration must be"),
    ]:
        resp = await client.post(BLOCKS, json={"number": "+57 300 555 1111", **bad}, headers=auth())
        assert resp.status == 400, bad
        error = (await resp.json())["error"]
        assert error["code"] == "bad_request" and message in error["message"]
    assert len((await service.list_blocks(PNID))[0]) == 3


@pytest.mark.slow
async def test_cli_duration(tmp_path: Any, redis_url: str) -> None:
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from support import REPO, base_config_data, record

    path = Path(tmp_path) / "config.yaml"
    path.write_text(yaml.safe_dump(base_config_data(redis_url)))
    await record(path, NUMBER)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "wa_blocklist.proxy.cli", *args, "--connector", PNID, "--config", str(path)]
        return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=60)

    bad = cli("block", NUMBER, "--duration", "2y")
    assert bad.returncode == 1 and "duration must be" in bad.stderr
    done = cli("block", NUMBER, "--duration", "12h")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"blocked: {NUMBER} on {PNID} since ") and " until 20" in done.stdout
    listed = json.loads(cli("list", "--json").stdout.splitlines()[0])
    blocked_at = datetime.fromisoformat(listed["blocked_at"].replace("Z", "+00:00"))
    expires_at = datetime.fromisoformat(listed["expires_at"].replace("Z", "+00:00"))
    assert expires_at - blocked_at == timedelta(hours=12)
