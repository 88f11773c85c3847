"""Block everywhere (issue 19): one action blocks or unblocks a number on several or all connectors, with the
24-hour rule applied per connector."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml
from aiohttp.test_utils import TestClient
from playwright.async_api import expect

from wa_blocklist.proxy.app import create_app
from wa_blocklist.proxy.appkeys import SERVICE
from wa_blocklist.proxy.base.errors import BadRequest, UnknownConnector
from wa_blocklist.proxy.blocklist.service import Actor, BlocklistService
from wa_blocklist.proxy.config import parse_config
from wa_blocklist.proxy.store.blocks import BlocklistStore

from fakes import FakeGraph
from support import (
    PNID,
    PNID_BR,
    VIEWER_TOKEN,
    FakeClock,
    OpenAdmin,
    auth,
    base_config_data,
    blocks_dialog,
    sign_in,
    wrote_recently,
)

NUMBER = "573001234567"
EVERYWHERE = "/admin/api/everywhere/blocks"
SUPERVISOR = Actor("supervisor", "test")
REPO = Path(__file__).resolve().parent.parent


def _send(to: str = NUMBER) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": "hola"}}


async def test_a_block_made_everywhere_refuses_sends_on_each_connector(
    client: TestClient[Any, Any], service: BlocklistService, fake_graph: FakeGraph
) -> None:
    await wrote_recently(service, PNID, NUMBER)
    await wrote_recently(service, PNID_BR, NUMBER)
    resp = await client.post(EVERYWHERE, json={"number": "+57 300 123 4567", "reason": "acoso"}, headers=auth())
    assert resp.status == 200
    results = (await resp.json())["results"]
    assert [(r["phone_number_id"], r["outcome"]) for r in results] == [(PNID, "blocked"), (PNID_BR, "blocked")]
    assert all(r["block"]["reason"] == "acoso" and r["block"]["number"] == NUMBER for r in results)

    for pnid in (PNID, PNID_BR):
        answer = await client.post(f"/v21.0/{pnid}/messages", json=_send("+57 300 123 4567"))
        assert answer.status == 400 and (await answer.json())["error"]["code"] == 139900
        records, _ = await service.audit(pnid)
        assert [(r["action"], r["reason"], r["by"]) for r in records] == [("block", "acoso", "supervisor")]
    assert fake_graph.requests == []

    # Again: idempotent, said per connector.
    again = await (await client.post(EVERYWHERE, json={"number": NUMBER}, headers=auth())).json()
    assert {r["outcome"] for r in again["results"]} == {"already_blocked"}

    where = await (await client.get(f"{EVERYWHERE}/{NUMBER}", headers=auth(VIEWER_TOKEN))).json()
    assert {r["phone_number_id"]: r["outcome"] for r in where["results"]} == {PNID: "blocked", PNID_BR: "blocked"}

    # Unblock everywhere, with a reason in each connector's audit trail.
    resp = await client.delete(f"{EVERYWHERE}/{NUMBER}?reason=perdonado", headers=auth())
    assert resp.status == 200
    assert {r["outcome"] for r in (await resp.json())["results"]} == {"unblocked"}
    for pnid in (PNID, PNID_BR):
        assert (await client.post(f"/v21.0/{pnid}/messages", json=_send())).status == 200
        records, _ = await service.audit(pnid)
        assert (records[0]["action"], records[0]["reason"]) == ("unblock", "perdonado")
    again = await (await client.delete(f"{EVERYWHERE}/{NUMBER}", headers=auth())).json()
    assert {r["outcome"] for r in again["results"]} == {"not_blocked"}


async def test_the_24_hour_rule_applies_per_connector(client: TestClient[Any, Any], service: BlocklistService) -> None:
    await wrote_recently(service, PNID, NUMBER)  # wrote to the Colombian connector only
    results = (await (await client.post(EVERYWHERE, json={"number": NUMBER}, headers=auth())).json())["results"]
    outcomes = {r["phone_number_id"]: r for r in results}
    assert outcomes[PNID]["outcome"] == "blocked"
    assert outcomes[PNID_BR]["outcome"] == "not_recently_active" and outcomes[PNID_BR]["block"] is None
    assert "24 hours" in outcomes[PNID_BR]["detail"]
    assert (await client.post(f"/v21.0/{PNID_BR}/messages", json=_send())).status == 200
    assert await service.audit(PNID_BR) == ([], None)  # no record where nothing was done

    # include_unsynced: blocked on the connector that does not sync to Meta, saying why.
    body = {"number": NUMBER, "include_unsynced": True, "connectors": [PNID_BR], "duration": "7d"}
    results = (await (await client.post(EVERYWHERE, json=body, headers=auth())).json())["results"]
    assert [r["outcome"] for r in results] == ["blocked"] and "sync to Meta" in results[0]["detail"]
    assert results[0]["block"]["expires_at"] is not None
    assert (await client.post(f"/v21.0/{PNID_BR}/messages", json=_send())).status == 400


async def test_include_unsynced_never_overrides_the_rule_on_a_synced_connector(
    make_config: Any, aiohttp_client: Any, clock: FakeClock
) -> None:
    def synced(data: dict[str, Any]) -> None:
        data["connectors"][1].update(sync_to_meta=True, access_token="token-br")

    client = await aiohttp_client(create_app(make_config(synced), clock=clock))
    service = client.app[SERVICE]
    await wrote_recently(service, PNID, NUMBER)
    outcomes = await service.block_everywhere(NUMBER, actor=SUPERVISOR, include_unsynced=True)
    assert [(o.connector.phone_number_id, o.outcome) for o in outcomes] == [
        (PNID, "blocked"), (PNID_BR, "not_recently_active")
    ]  # fmt: skip


async def test_bad_requests_are_refused_before_anything_changes(
    client: TestClient[Any, Any], service: BlocklistService
) -> None:
    await wrote_recently(service, PNID, NUMBER)
    for body, fragment in [
        ({"number": NUMBER, "connectors": ["999999"]}, "999999"),
        ({"number": NUMBER, "connectors": []}, "at least one"),
        ({"number": NUMBER, "connectors": "all"}, "list of phone number IDs"),
        ({"number": NUMBER, "include_unsynced": "yes"}, "true or false"),
        ({"number": NUMBER, "reason": "x" * 501}, "too long"),
        ({"number": NUMBER, "duration": "1d", "expires_at": "2030-01-01T00:00:00Z"}, "either"),
        ({"reason": "no number"}, "number"),
        ({"number": NUMBER, "pnid": PNID}, "unknown field"),
    ]:
        resp = await client.post(EVERYWHERE, json=body, headers=auth())
        assert 400 <= resp.status < 500, body
        assert fragment in (await resp.json())["error"]["message"], body
    assert await service.audit(PNID) == ([], None)
    resp = await client.post(EVERYWHERE, json={"number": NUMBER}, headers=auth(VIEWER_TOKEN))
    assert resp.status == 403
    with pytest.raises(UnknownConnector):
        await service.block_everywhere(NUMBER, actor=SUPERVISOR, pnids=[PNID, "123456"])
    with pytest.raises(BadRequest):
        await service.unblock_everywhere(NUMBER, actor=SUPERVISOR, pnids=[])


@pytest.mark.slow
def test_the_cli_blocks_on_all_connectors(tmp_path: Path, redis_url: str) -> None:
    data = base_config_data(redis_url)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    config = parse_config(data, env={})

    async def wrote() -> None:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            await wrote_recently(BlocklistService(BlocklistStore(client), config), PNID, NUMBER)
        finally:
            await client.aclose()

    asyncio.run(wrote())

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wa_blocklist.proxy.cli", *args, "--config", str(path)],
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )  # fmt: skip

    blocked = run("block", NUMBER, "--all-connectors", "--reason", "spam")
    assert blocked.returncode == 0, blocked.stderr
    lines = blocked.stdout.splitlines()
    assert lines[0].startswith(f"{PNID} (Ventas Colombia): blocked")
    assert lines[1].startswith(f"{PNID_BR} (Suporte Brasil): not recently active")
    forced = run("block", NUMBER, "--connectors", PNID_BR, "--include-unsynced")
    assert forced.returncode == 0 and "blocked without a recent message" in forced.stdout
    unblocked = run("unblock", NUMBER, "--all-connectors")
    assert unblocked.returncode == 0 and unblocked.stdout.count(": unblocked") == 2
    assert run("unblock", NUMBER, "--all-connectors").returncode == 1  # blocked nowhere

    assert run("optout", NUMBER, "--connector", PNID, "--reason", "by phone").returncode == 0
    listing = run("optouts", "--connector", PNID)
    assert "+57 300 1234567" in listing.stdout and "by phone" in listing.stdout
    assert run("optin", NUMBER, "--connector", PNID).returncode == 0
    assert "+57" not in run("optouts", "--connector", PNID).stdout


# ---------------------------------------------------------------- the admin page (headless Chromium)


async def test_the_page_blocks_on_all_connectors_and_shows_where(
    open_admin: OpenAdmin, service: BlocklistService
) -> None:
    await wrote_recently(service, PNID, NUMBER)  # wrote to the Colombian connector only
    await service.block(PNID, "573009990000", actor=Actor("flood", "auto"), force=True, duration_seconds=600)
    page = await open_admin()
    await sign_in(page)
    await page.get_by_role("button", name="Block numbers of Ventas Colombia").click()
    dialog = blocks_dialog(page)
    unsynced = dialog.get_by_label("Also where it has not written (connectors that do not sync to Meta)")
    await expect(unsynced).to_be_disabled()
    await dialog.get_by_label("On all connectors").check()
    await expect(unsynced).to_be_enabled()
    await dialog.get_by_label("Number", exact=True).fill("+57 300 123 4567")
    await dialog.get_by_label("Reason (optional)").fill("acoso")
    await dialog.get_by_role("button", name="Add Number").click()
    await expect(dialog.get_by_role("status")).to_have_text(
        "+57 300 1234567: blocked on Ventas Colombia. Not blocked on Suporte Brasil: it has not written there in "
        "the last 24 hours."
    )
    # Again, where it has not written too (the Brazilian connector does not sync to Meta).
    await dialog.get_by_label("On all connectors").check()
    await unsynced.check()
    await dialog.get_by_label("Number", exact=True).fill(NUMBER)
    await dialog.get_by_role("button", name="Add Number").click()
    await expect(dialog.get_by_role("status")).to_have_text(
        "+57 300 1234567: blocked on Ventas Colombia, Suporte Brasil."
    )
    assert (await service.get(PNID_BR, NUMBER)).reason == ""
    row = dialog.locator("tbody tr", has_text="+57 300 1234567")
    await expect(row.locator(".block-elsewhere")).to_have_text("Also blocked on Suporte Brasil")
    auto = dialog.locator("tbody tr", has_text="+57 300 9990000")
    await expect(auto.locator("td").nth(3)).to_have_text("floodautomatic")
    await expect(auto.locator(".block-elsewhere")).to_be_hidden()


async def test_a_number_that_reads_nowhere_is_bad_input(client: TestClient[Any, Any]) -> None:
    resp = await client.post(EVERYWHERE, json={"number": "not a number"}, headers=auth())
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_number"
    resp = await client.delete(f"{EVERYWHERE}/12", headers=auth())
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_number"
