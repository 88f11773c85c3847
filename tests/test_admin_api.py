"""The admin API over HTTP: contract, auth and roles, errors in the admin format."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from wa_blocklist.proxy.blocklist.service import BlocklistService

from support import PNID, PNID_BR, VIEWER_TOKEN, FakeClock, auth, wrote_recently

BLOCKS = f"/admin/api/connectors/{PNID}/blocks"


async def error_of(resp: Any, status: int, code: str) -> str:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    message: str = body["error"]["message"]
    assert message
    return message


async def test_connectors_list_with_counts(client: TestClient[Any, Any], service: BlocklistService) -> None:
    await wrote_recently(service, PNID, "573001234567")
    await client.post(BLOCKS, json={"number": "+57 300 123 4567"}, headers=auth())
    resp = await client.get("/admin/api/connectors", headers=auth(VIEWER_TOKEN))
    assert resp.status == 200
    body = await resp.json()
    assert body == {
        "connectors": [
            {
                "phone_number_id": PNID,
                "name": "Ventas Colombia",
                "display_number": "+57 601 555 0100",
                "region": "CO",
                "blocked_count": 1,
            },
            {
                "phone_number_id": PNID_BR,
                "name": "Suporte Brasil",
                "display_number": "+55 11 4000 0000",
                "region": "BR",
                "blocked_count": 0,
            },
        ]
    }
    assert "secret" not in await resp.text()
    one = await client.get(f"/admin/api/connectors/{PNID}", headers=auth())
    assert (await one.json())["blocked_count"] == 1
    await error_of(await client.get("/admin/api/connectors/123456", headers=auth()), 404, "unknown_connector")


async def test_block_lifecycle(client: TestClient[Any, Any], service: BlocklistService, clock: FakeClock) -> None:
    await wrote_recently(service, PNID, "573001234567")
    resp = await client.post(
        BLOCKS, json={"number": "+57 300 123 4567", "reason": "  insults \n repeated "}, headers=auth()
    )
    assert resp.status == 201
    entry = await resp.json()
    assert entry["number"] == "573001234567"
    assert entry["reason"] == "insults repeated"
    assert entry["blocked_by"] == "supervisor"
    assert entry["type"] == "phone"
    assert entry["blocked_at"].endswith("Z") and entry["blocked_at"].startswith("20")
    assert resp.headers["Location"] == f"{BLOCKS}/573001234567"

    clock.advance(5)
    again = await client.post(BLOCKS, json={"number": "300 123 4567"}, headers=auth())
    assert again.status == 200 and await again.json() == entry  # idempotent

    for form in ["573001234567", quote("+57 300 123 4567"), "3001234567"]:
        got = await client.get(f"{BLOCKS}/{form}", headers=auth(VIEWER_TOKEN))
        assert got.status == 200 and await got.json() == entry, form

    listing = await client.get(BLOCKS, headers=auth(VIEWER_TOKEN))
    assert await listing.json() == {"blocks": [entry], "next_cursor": None}

    deleted = await client.delete(f"{BLOCKS}/{quote('+57 300 123 4567')}", headers=auth())
    assert deleted.status == 204
    await error_of(await client.delete(f"{BLOCKS}/573001234567", headers=auth()), 404, "not_blocked")
    await error_of(await client.get(f"{BLOCKS}/573001234567", headers=auth()), 404, "not_blocked")


async def test_24_hour_rule_is_a_409(client: TestClient[Any, Any], service: BlocklistService, clock: FakeClock) -> None:
    message = await error_of(
        await client.post(BLOCKS, json={"number": "+57 300 123 4567"}, headers=auth()), 409, "not_recently_active"
    )
    assert "last 24 hours" in message
    await wrote_recently(service, PNID, "573001234567")
    clock.advance(24 * 3600 + 1)
    await error_of(
        await client.post(BLOCKS, json={"number": "+57 300 123 4567"}, headers=auth()), 409, "not_recently_active"
    )
    listing = await client.get(BLOCKS, headers=auth())
    assert (await listing.json())["blocks"] == []  # nothing half-written


async def test_paging_and_search_over_http(
    client: TestClient[Any, Any], service: BlocklistService, clock: FakeClock
) -> None:
    numbers = [f"5730012300{i:02d}" for i in range(25)]
    await wrote_recently(service, PNID, *numbers)
    for number in numbers:
        clock.advance(1)
        assert (await client.post(BLOCKS, json={"number": number}, headers=auth())).status == 201
    got: list[str] = []
    cursor = ""
    while True:
        resp = await client.get(
            BLOCKS, params={"limit": "10", **({"cursor": cursor} if cursor else {})}, headers=auth()
        )
        body = await resp.json()
        got += [e["number"] for e in body["blocks"]]
        if body["next_cursor"] is None:
            break
        cursor = body["next_cursor"]
    assert got == list(reversed(numbers))
    found = await client.get(BLOCKS, params={"q": "230007"}, headers=auth())
    assert [e["number"] for e in (await found.json())["blocks"]] == ["573001230007"]


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        (b"{not json", "bad_request", "not valid JSON"),
        (b"[1, 2]", "bad_request", "JSON object"),
        (b"{}", "bad_request", '"number" is required'),
        (b'{"number": ""}', "bad_request", '"number" is required'),
        (b'{"number": ["+57"]}', "bad_request", '"number" is required'),
        (b'{"number": "hello"}', "invalid_number", "is not a phone number"),
        (b'{"number": "+57 300 123 4567", "reason": 5}', "bad_request", "reason must be a string"),
        (b'{"number": "+57 300 123 4567", "numbr": 1}', "bad_request", "unknown field(s): numbr"),
        (b"\xff\xfe", "bad_request", "not valid JSON"),
    ],
)
async def test_bad_input_is_a_400_in_the_admin_format(
    client: TestClient[Any, Any], body: bytes, code: str, fragment: str
) -> None:
    resp = await client.post(BLOCKS, data=body, headers={**auth(), "Content-Type": "application/json"})
    assert fragment in await error_of(resp, 400, code)


async def test_bad_query_parameters(client: TestClient[Any, Any]) -> None:
    await error_of(await client.get(BLOCKS, params={"limit": "ten"}, headers=auth()), 400, "bad_request")
    await error_of(await client.get(BLOCKS, params={"limit": "0"}, headers=auth()), 400, "bad_request")
    await error_of(await client.get(BLOCKS, params={"limit": "501"}, headers=auth()), 400, "bad_request")
    await error_of(await client.get(BLOCKS, params={"cursor": "zzz"}, headers=auth()), 400, "bad_request")


async def test_unknown_connector_and_route(client: TestClient[Any, Any]) -> None:
    await error_of(
        await client.post("/admin/api/connectors/999999/blocks", json={"number": "+57 300 123 4567"}, headers=auth()),
        404,
        "unknown_connector",
    )
    await error_of(await client.get("/admin/api/connectors/999999/blocks", headers=auth()), 404, "unknown_connector")
    await error_of(await client.get("/admin/api/nothing-here", headers=auth()), 404, "not_found")
    await error_of(await client.put(BLOCKS, headers=auth()), 405, "method_not_allowed")


async def test_oversized_body_is_a_413(client: TestClient[Any, Any]) -> None:
    resp = await client.post(BLOCKS, data=b'{"number": "' + b"1" * 100_000 + b'"}', headers=auth())
    await error_of(resp, 413, "body_too_large")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer"}, {"Authorization": "Bearer wrong-token-xyz"}, {"Authorization": "Basic abc"}],
)
async def test_missing_or_wrong_token_is_a_401(client: TestClient[Any, Any], headers: dict[str, str]) -> None:
    for method, path in [
        ("GET", "/admin/api/connectors"),
        ("GET", BLOCKS),
        ("POST", BLOCKS),
        ("DELETE", f"{BLOCKS}/1"),
    ]:
        resp = await client.request(method, path, headers=headers, json={"number": "+57 300 123 4567"})
        await error_of(resp, 401, "unauthorized")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_viewer_reads_but_cannot_change(client: TestClient[Any, Any], service: BlocklistService) -> None:
    await wrote_recently(service, PNID, "573001234567")
    viewer = auth(VIEWER_TOKEN)
    session = await client.get("/admin/api/session", headers=viewer)
    assert await session.json() == {"name": "wallboard", "role": "viewer"}
    await error_of(await client.post(BLOCKS, json={"number": "+57 300 123 4567"}, headers=viewer), 403, "forbidden")
    assert (await client.get(BLOCKS, headers=viewer)).status == 200
    assert (await (await client.get(BLOCKS, headers=viewer)).json())["blocks"] == []
    assert (await client.post(BLOCKS, json={"number": "+57 300 123 4567"}, headers=auth())).status == 201
    await error_of(await client.delete(f"{BLOCKS}/573001234567", headers=viewer), 403, "forbidden")
    assert (await client.get(f"{BLOCKS}/573001234567", headers=viewer)).status == 200
    admin_session = await client.get("/admin/api/session", headers=auth())
    assert await admin_session.json() == {"name": "supervisor", "role": "admin"}


async def test_audit_trail_over_http(client: TestClient[Any, Any], service: BlocklistService) -> None:
    await wrote_recently(service, PNID, "573001234567")
    await client.post(BLOCKS, json={"number": "+57 300 123 4567", "reason": "spam"}, headers=auth())
    deleted = await client.delete(f"{BLOCKS}/573001234567", params={"reason": "appeal accepted"}, headers=auth())
    assert deleted.status == 204
    resp = await client.get(f"/admin/api/connectors/{PNID}/audit", headers=auth(VIEWER_TOKEN))
    body = await resp.json()
    assert [(r["action"], r["by"], r["source"], r["reason"]) for r in body["records"]] == [
        ("unblock", "supervisor", "admin_api", "appeal accepted"),
        ("block", "supervisor", "admin_api", "spam"),
    ]
    assert body["next_cursor"] is None
    page = await client.get(f"/admin/api/connectors/{PNID}/audit", params={"limit": "1"}, headers=auth())
    first = await page.json()
    assert len(first["records"]) == 1 and first["next_cursor"] == first["records"][0]["id"]
    await error_of(
        await client.get(f"/admin/api/connectors/{PNID}/audit", params={"cursor": "x"}, headers=auth()),
        400,
        "bad_request",
    )


async def test_openapi_document_is_public_and_lists_every_route(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/admin/api/openapi.json")
    assert resp.status == 200
    document = await resp.json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/session",
        "/connectors",
        "/connectors/{pnid}",
        "/connectors/{pnid}/blocks",
        "/connectors/{pnid}/blocks/{number}",
        "/connectors/{pnid}/audit",
        "/connectors/{pnid}/check/{number}",
        "/connectors/{pnid}/messages/{message_id}/check",
        "/join_requests/{join_request_id}/check",
        "/connectors/{pnid}/blocks.csv",
        "/connectors/{pnid}/blocks/import",
        "/connectors/{pnid}/blocks/restore",
        "/connectors/{pnid}/optouts",
        "/connectors/{pnid}/optouts/{number}",
        "/everywhere/blocks",
        "/everywhere/blocks/{number}",
    }
    routes = {
        (route.method, route.resource.canonical.removeprefix("/admin/api"))
        for route in client.app.router.routes()  # type: ignore[union-attr]
        if route.resource is not None and route.resource.canonical.startswith("/admin/api/") and route.method != "HEAD"
    }
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert routes - {("GET", "/openapi.json")} == documented


async def test_check_follows_links(client: TestClient[Any, Any], service: BlocklistService) -> None:
    from wa_blocklist.proxy.blocklist.service import InboundUser

    await service.record_inbound(PNID, [InboundUser(wa_id="573001234567", bsuid="CO.user42")])
    await client.post(BLOCKS, json={"number": "+57 300 123 4567"}, headers=auth())
    check = f"/admin/api/connectors/{PNID}/check"
    for form in ["CO.user42", "573001234567", quote("+57 300 123 4567")]:
        resp = await client.get(f"{check}/{form}", headers=auth(VIEWER_TOKEN))
        assert await resp.json() == {"blocked": True, "matched": "573001234567"}, form
    resp = await client.get(f"{check}/CO.someoneelse", headers=auth(VIEWER_TOKEN))
    assert await resp.json() == {"blocked": False, "matched": None}
    await error_of(await client.get(f"{check}/garbage", headers=auth()), 400, "invalid_number")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"number": ' + b"5" * 5000 + b"}", "longer than 32 characters"),
        (b'{"number": "+57 300 123 4567", "duration": ' + b"9" * 5000 + b"}", "longer than 32 characters"),
        (b'{"number": "+57 300 123 4567", "duration": 1e999}', "out of range"),
        (b'{"number": NaN}', "NaN is not valid JSON"),
        (b'{"number": "1", "reason": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested deeper than 32 levels"),
        (b"[" * 60_000, "nested deeper than 32 levels"),
        (b'{"reason": "' + b"[" * 5000 + b'", "number": ' + b'{"a": ' * 40 + b"1" + b"}" * 41, "nested deeper"),
    ],
    ids=["5000-digit-int", "5000-digit-duration", "infinite-float", "nan", "deep-array", "unclosed", "deep-object"],
)
async def test_hostile_json_is_a_400_never_a_500(client: TestClient[Any, Any], body: bytes, fragment: str) -> None:
    resp = await client.post(BLOCKS, data=body, headers={**auth(), "Content-Type": "application/json"})
    assert fragment in await error_of(resp, 400, "bad_request")


async def test_brackets_inside_strings_do_not_count_as_nesting(
    client: TestClient[Any, Any], service: BlocklistService
) -> None:
    await wrote_recently(service, PNID, "573001234567")
    body = b'{"number": "+57 300 123 4567", "reason": "' + b"[{" * 200 + b'\\" ]"}'
    resp = await client.post(BLOCKS, data=body, headers={**auth(), "Content-Type": "application/json"})
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize("score", ["nan", "inf", "-inf", "1_0", " 1 ", "1e3", "٣"])
async def test_list_cursors_are_validated_strictly(client: TestClient[Any, Any], score: str) -> None:
    cursor = base64.urlsafe_b64encode(f"{score}\n573001234567".encode()).decode().rstrip("=")
    resp = await client.get(BLOCKS, params={"cursor": cursor}, headers=auth())
    assert "cursor is not one this API returned" in await error_of(resp, 400, "bad_request")


async def test_bidi_controls_of_an_entry_stored_before_cleaning_are_not_shown(
    client: TestClient[Any, Any], service: BlocklistService
) -> None:
    from wa_blocklist.proxy.graph.identity import from_wa_id
    from wa_blocklist.proxy.store.schema import BlockEntry

    who = from_wa_id("573001234567")
    legacy = BlockEntry(number=who.value, kind=who.kind, key=who.key, blocked_at_ms=service.now_ms(),
                        reason="paid\u202egnp.exe", blocked_by="ana\u2067", source="admin_api")  # fmt: skip
    await service.store.block(PNID, legacy, cutoff_ms=0, force=True)
    resp = await client.get(f"{BLOCKS}/{who.value}", headers=auth())
    entry = await resp.json()
    assert (entry["reason"], entry["blocked_by"]) == ("paidgnp.exe", "ana")
    listed = await (await client.get(BLOCKS, headers=auth())).json()
    assert listed["blocks"][0]["reason"] == "paidgnp.exe"
