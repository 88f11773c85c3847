"""Meta's Block Users API through the proxy, and the sync of admin/CLI changes to Meta."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from wa_blocklist.proxy.app import create_app
from wa_blocklist.proxy.appkeys import META_SYNC, SERVICE, STORE
from wa_blocklist.proxy.blocklist.meta_sync import MetaSync
from wa_blocklist.proxy.blocklist.service import Actor, BlocklistService

from fakes import FakeGraph
from support import ADMIN_TOKEN, PNID, auth, free_port, wrote_recently

TOKEN = {"Authorization": "Bearer EAAG-contact-center-token"}
RECENT = "573001234567"
STALE = "573009876543"
PATH = f"/v21.0/{PNID}/block_users"


def users(*numbers: str, field: str = "user") -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "block_users": [{field: n} for n in numbers]}


def meta_added(*numbers: str, key: str = "added_users") -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "block_users": {key: [{"input": n, "wa_id": "".join(c for c in n if c.isdigit())} for n in numbers]},
    }


async def test_block_applies_here_and_at_meta_with_the_original_bytes(client, service, fake_graph: FakeGraph):
    await wrote_recently(service, PNID, RECENT)
    fake_graph.respond("POST", "block_users$", 200, meta_added("+57 300 123 4567"))
    body = json.dumps(users("+57 300 123 4567")).encode()
    resp = await client.post(PATH, data=body, headers={**TOKEN, "Content-Type": "application/json"})
    assert resp.status == 200
    assert await resp.json() == {
        "messaging_product": "whatsapp",
        "block_users": {"added_users": [{"input": "+57 300 123 4567", "wa_id": RECENT}]},
    }
    [seen] = fake_graph.requests
    assert (seen.method, seen.path, seen.body) == ("POST", PATH, body)
    assert seen.headers["Authorization"] == TOKEN["Authorization"]
    entry = await service.get(PNID, RECENT)
    assert (entry.blocked_by, entry.source) == ("graph_api", "block_users_api")


async def test_24_hour_rule_is_ours_too_and_partial_failure_has_metas_shape(client, service, fake_graph):
    await wrote_recently(service, PNID, RECENT)
    fake_graph.respond("POST", "block_users$", 200, meta_added(RECENT))
    resp = await client.post(PATH, json=users(RECENT, STALE), headers=TOKEN)
    assert resp.status == 400
    body = await resp.json()
    assert body["block_users"]["added_users"] == [{"input": RECENT, "wa_id": RECENT}]
    [failed] = body["block_users"]["failed_users"]
    assert failed["input"] == STALE
    assert failed["errors"][0]["code"] == 131047
    assert failed["errors"][0]["message"] == "Re-engagement required"
    assert body["error"]["code"] == 139100
    assert body["error"]["message"] == "(#139100) Failed to block/unblock users"
    assert body["error"]["fbtrace_id"]
    # Only the user we accepted went to Meta.
    assert fake_graph.requests[0].json() == users(RECENT)
    await service.get(PNID, RECENT)
    assert [e.number for e in (await service.list_blocks(PNID))[0]] == [RECENT]


async def test_nobody_acceptable_means_meta_is_not_asked(client, fake_graph):
    resp = await client.post(PATH, json=users(STALE, "not a number"), headers=TOKEN)
    assert resp.status == 400
    failed = (await resp.json())["block_users"]["failed_users"]
    assert [f["errors"][0]["code"] for f in failed] == [131047, 100]
    assert fake_graph.requests == []


async def test_meta_refusing_a_user_is_reported_and_not_applied_here(client, service, fake_graph):
    await wrote_recently(service, PNID, RECENT, "573005550000")
    meta_error = {"message": "Re-engagement required", "code": 131047, "error_data": {"details": "Meta says so"}}
    fake_graph.respond(
        "POST",
        "block_users$",
        400,
        {
            "messaging_product": "whatsapp",
            "block_users": {
                "added_users": [{"input": RECENT, "wa_id": RECENT}],
                "failed_users": [{"input": "573005550000", "wa_id": "573005550000", "errors": [meta_error]}],
            },
            "error": {"code": 139100, "message": "(#139100) Failed to block/unblock users"},
        },
    )
    resp = await client.post(PATH, json=users(RECENT, "573005550000"), headers=TOKEN)
    assert resp.status == 400
    body = await resp.json()
    assert body["block_users"]["failed_users"] == [
        {"input": "573005550000", "wa_id": "573005550000", "errors": [meta_error]}
    ]
    assert [e.number for e in (await service.list_blocks(PNID))[0]] == [RECENT]


async def test_meta_refusing_the_whole_request_changes_nothing_here(client, service, fake_graph):
    await wrote_recently(service, PNID, RECENT)
    invalid_token = {"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}}
    fake_graph.respond("POST", "block_users$", 401, invalid_token)
    resp = await client.post(PATH, json=users(RECENT), headers={"Authorization": "Bearer forged"})
    assert resp.status == 401
    assert await resp.json() == invalid_token
    assert (await service.list_blocks(PNID))[0] == []


async def test_unreachable_meta_changes_nothing_here(aiohttp_client, make_config, clock):
    def down(data: dict[str, Any]) -> None:
        data["graph"]["base_url"] = f"http://127.0.0.1:{free_port()}"

    app = create_app(make_config(down), clock=clock)
    client = await aiohttp_client(app)
    await wrote_recently(app[SERVICE], PNID, RECENT)
    resp = await client.post(PATH, json=users(RECENT), headers=TOKEN)
    assert resp.status == 502
    assert (await app[SERVICE].list_blocks(PNID))[0] == []


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (
            {"messaging_product": "whatsapp", "block_users": [{"user": str(573000000000 + i)} for i in range(1001)]},
            "1000",
        ),
        ({"block_users": [{"user": RECENT}]}, "messaging_product"),
        ({"messaging_product": "whatsapp", "block_users": []}, "non-empty"),
        ({"messaging_product": "whatsapp", "block_users": [{"user": RECENT, "user_id": "US.1"}]}, "exactly one"),
        ({"messaging_product": "whatsapp", "block_users": ["573001234567"]}, "object"),
    ],
)
async def test_bad_requests_are_refused_before_anything(client, fake_graph, payload, says):
    resp = await client.post(PATH, json=payload, headers=TOKEN)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == 100
    assert says in error["error_data"]["details"]
    assert fake_graph.requests == []


async def test_unblock_of_a_block_made_through_the_graph_face_applies_here_and_at_meta(client, service, fake_graph):
    await wrote_recently(service, PNID, RECENT)
    await service.block(PNID, RECENT, actor=Actor("graph_api", "block_users_api"))
    fake_graph.respond("DELETE", "block_users$", 200, meta_added(RECENT, key="removed_users"))
    resp = await client.delete(PATH, json=users(RECENT), headers=TOKEN)
    assert resp.status == 200
    assert (await resp.json())["block_users"] == {"removed_users": [{"input": RECENT, "wa_id": RECENT}]}
    assert (await service.list_blocks(PNID))[0] == []
    assert fake_graph.requests[0].method == "DELETE"


@pytest.mark.parametrize("source", ["admin_api", "cli", "cli_import", "admin_api_import", "plugin"])
async def test_a_supervisors_block_cannot_be_lifted_through_the_graph_face(client, service, fake_graph, source):
    await wrote_recently(service, PNID, RECENT)
    await service.block(PNID, RECENT, actor=Actor("supervisor", source))
    resp = await client.delete(PATH, json=users("+57 300 123 4567"), headers=TOKEN)
    assert resp.status == 400
    body = await resp.json()
    [failed] = body["block_users"]["failed_users"]
    [error] = failed["errors"]
    assert error["code"] == 10
    assert f"blocked through {source}" in error["error_data"]["details"]
    assert "gateway.block_users_unblock" in error["error_data"]["details"]
    assert (await service.get(PNID, RECENT)).source == source  # still blocked here
    assert fake_graph.requests == []  # and never asked of Meta
    records, _ = await service.audit(PNID)
    assert records[0]["action"] == "unblock_refused"
    assert (records[0]["number"], records[0]["source"]) == (RECENT, "block_users_api")


async def test_block_users_unblock_allow_lets_the_graph_face_lift_any_block(
    aiohttp_client, make_config, clock, fake_graph
):
    def allow(data: dict[str, Any]) -> None:
        data["gateway"] = {"block_users_unblock": "allow"}

    app = create_app(make_config(allow), clock=clock)
    client = await aiohttp_client(app)
    service = app[SERVICE]
    await wrote_recently(service, PNID, RECENT)
    await service.block(PNID, RECENT, actor=Actor("supervisor", "admin_api"))
    fake_graph.respond("DELETE", "block_users$", 200, meta_added(RECENT, key="removed_users"))
    resp = await client.delete(PATH, json=users(RECENT), headers=TOKEN)
    assert resp.status == 200
    assert (await service.list_blocks(PNID))[0] == []


async def test_bsuid_users_go_by_user_id(client, service, fake_graph):
    await wrote_recently(service, PNID, bsuid="CO.ABCDEF0123456789")
    resp = await client.post(PATH, json=users("CO.ABCDEF0123456789", field="user_id"), headers=TOKEN)
    assert resp.status == 200
    assert (await resp.json())["block_users"]["added_users"] == [
        {"input": "CO.ABCDEF0123456789", "user_id": "CO.ABCDEF0123456789"}
    ]
    assert (await service.get(PNID, "CO.ABCDEF0123456789")).kind == "bsuid"


async def test_get_lists_our_blocklist_in_metas_shape_after_metas_ok(client, service, fake_graph):
    for number in (RECENT, STALE):
        await wrote_recently(service, PNID, number)
        await service.block(PNID, number, actor=Actor("supervisor", "admin_api"))
    fake_graph.respond("GET", "block_users$", 200, {"data": [], "paging": {"cursors": {}}})
    resp = await client.get(f"{PATH}?limit=1", headers=TOKEN)
    assert resp.status == 200
    page = await resp.json()
    assert page["data"] == [{"messaging_product": "whatsapp", "wa_id": STALE}]
    resp = await client.get(f"{PATH}?limit=1&after={page['paging']['cursors']['after']}", headers=TOKEN)
    assert (await resp.json())["data"] == [{"messaging_product": "whatsapp", "wa_id": RECENT}]
    assert [r.query for r in fake_graph.requests] == ["limit=1", "limit=1"]

    fake_graph.respond("GET", "block_users$", 401, {"error": {"code": 190, "message": "Invalid OAuth access token."}})
    resp = await client.get(PATH, headers={"Authorization": "Bearer forged"})
    assert resp.status == 401
    assert "data" not in await resp.json()


# --- sync to Meta ---------------------------------------------------------------------------------------------


def syncing(data: dict[str, Any]) -> None:
    data["connectors"][0]["sync_to_meta"] = True
    data["connectors"][0]["access_token"] = "EAAG-connector-token"


@pytest.fixture
async def sync_app(aiohttp_client, make_config, clock):
    app = create_app(make_config(syncing), clock=clock)
    client = await aiohttp_client(app)
    return app, client


async def wait_for_requests(fake_graph: FakeGraph, count: int) -> None:
    async def arrived() -> None:
        while len(fake_graph.requests) < count:
            fake_graph.arrived.clear()
            await fake_graph.arrived.wait()

    await asyncio.wait_for(arrived(), 10)


async def test_admin_blocks_and_unblocks_are_applied_at_meta(sync_app, fake_graph):
    app, client = sync_app
    await wrote_recently(app[SERVICE], PNID, RECENT)
    resp = await client.post(
        f"/admin/api/connectors/{PNID}/blocks", json={"number": "+57 300 123 4567"}, headers=auth()
    )
    assert resp.status == 201
    await wait_for_requests(fake_graph, 1)
    seen = fake_graph.requests[0]
    assert (seen.method, seen.path) == ("POST", f"/v21.0/{PNID}/block_users")
    assert seen.headers["Authorization"] == "Bearer EAAG-connector-token"
    assert seen.json() == users(RECENT)

    resp = await client.delete(f"/admin/api/connectors/{PNID}/blocks/{RECENT}", headers=auth())
    assert resp.status == 204
    await wait_for_requests(fake_graph, 2)
    assert fake_graph.requests[1].method == "DELETE"
    await app[META_SYNC].run_once()
    assert await app[META_SYNC].pending(PNID) == {}


async def test_failed_sync_is_recorded_and_retried_never_dropped(sync_app, fake_graph, clock):
    app, _client = sync_app
    sync: MetaSync = app[META_SYNC]
    fake_graph.respond("POST", "block_users$", 500, {"error": {"code": 131016, "message": "Service unavailable"}})
    await wrote_recently(app[SERVICE], PNID, RECENT)
    await app[SERVICE].block(PNID, RECENT, actor=Actor("supervisor", "admin_api"))
    await wait_for_requests(fake_graph, 1)
    await sync.run_once()  # the background round may still be recording the failure; this one waits for its lease
    [record] = (await sync.pending(PNID)).values()
    assert record["action"] == "block" and record["user"] == RECENT
    assert record["attempts"] == 1
    assert "131016" in record["last_error"]
    assert "EAAG" not in record["last_error"]

    fake_graph.canned.clear()
    assert await sync.run_once() == 0  # not due yet: backoff
    clock.advance(6)
    assert await sync.run_once() == 1
    assert await sync.pending(PNID) == {}
    assert [r.method for r in fake_graph.requests] == ["POST", "POST"]


async def test_cli_changes_are_queued_and_picked_up_by_the_running_proxy(sync_app, fake_graph, clock):
    app, _client = sync_app
    config = app[SERVICE].config
    cli_service = BlocklistService(app[STORE], config, clock)  # what `wa-blocklist block` builds, without the app
    MetaSync(app[STORE], config).attach(cli_service)
    await wrote_recently(cli_service, PNID, RECENT)
    await cli_service.block(PNID, RECENT, actor=Actor("cli:ops", "cli"))
    assert [r["user"] for r in (await app[META_SYNC].pending(PNID)).values()] == [RECENT]
    await app[META_SYNC].run_once()
    assert await app[META_SYNC].pending(PNID) == {}
    assert [(r.method, r.json()) for r in fake_graph.requests] == [("POST", users(RECENT))]


async def test_block_users_api_changes_are_not_synced_twice(sync_app, fake_graph):
    app, client = sync_app
    await wrote_recently(app[SERVICE], PNID, RECENT)
    fake_graph.respond("POST", "block_users$", 200, meta_added(RECENT))
    assert (await client.post(PATH, json=users(RECENT), headers=TOKEN)).status == 200
    fake_graph.respond("DELETE", "block_users$", 200, meta_added(RECENT, key="removed_users"))
    assert (await client.delete(PATH, json=users(RECENT), headers=TOKEN)).status == 200
    assert await app[META_SYNC].pending(PNID) == {}
    await app[META_SYNC].run_once()
    assert len(fake_graph.requests) == 2
    assert ADMIN_TOKEN not in json.dumps([r.headers for r in fake_graph.requests])


@pytest.mark.parametrize(
    "query", ["after=nan", "after=1_0", "after=%201%20", "after=inf", "limit=1e3", "limit=%EF%BC%91"]
)
async def test_list_with_a_cursor_or_limit_that_is_not_ours_is_a_400(client, fake_graph, query):
    fake_graph.respond("GET", "block_users$", 200, {"data": [], "paging": {"cursors": {}}})
    resp = await client.get(f"{PATH}?{query}", headers=TOKEN)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == 100


async def test_block_users_with_a_batch_or_method_parameter_is_refused(client, service, fake_graph):
    await wrote_recently(service, PNID, RECENT)
    for path, body in [
        (f"{PATH}?method=delete", users(RECENT)),
        (PATH, {**users(RECENT), "method": "DELETE"}),
        (PATH, {**users(RECENT), "batch": "[]"}),
    ]:
        resp = await client.post(path, json=body, headers=TOKEN)
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == 100
    assert fake_graph.requests == []
